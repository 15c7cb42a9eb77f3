"""DESIGN.md's architecture, enforced over the source: one direction, no cycles, small files.

Every import in src/torchdoctor is read with ``ast`` (function-level imports included, relative
imports resolved) into a module graph; imports under ``if TYPE_CHECKING:`` are left out (they
never run: annotations are strings here). Then:

- the pipeline goes one way: collect/ -> session (the data model) -> analyze/ -> render/.
  The data model imports no other layer; collect/ imports no analysis or rendering; analyze/
  imports neither collect/ nor render/; render/ neither measures (collect/) nor advises
  (analyze/advice/). ops/ is pure (no other torchdoctor layer); lint/ reads source only. Only
  the command layer (cli, commands/) and the composition modules above the pipeline
  (``torchdoctor``, ``views``, ``reports``) may import across it, and nothing imports the
  command layer back;
- there are no import cycles between modules (see :data:`KNOWN_CYCLES`);
- no source file is over :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "torchdoctor"
MAX_LINES = 450

# Import cycles tolerated (none: the profiler-state work of issue #15 removed the last ones).
# Nothing may be added here; a cycle passes while its modules are a subset of one entry.
KNOWN_CYCLES: list[set[str]] = []

# Files allowed past MAX_LINES while being split (none).
LONG_FILES: set[str] = set()

# layer -> module prefixes it may not import (a prefix matches the module and its submodules)
COMMAND_LAYER = ("torchdoctor.cli", "torchdoctor.commands", "torchdoctor.__main__")
ABOVE_PIPELINE = (
    "torchdoctor.views",
    "torchdoctor.reports",
    "torchdoctor.history",
    *COMMAND_LAYER,
)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "torchdoctor.session": (
        "torchdoctor.collect",
        "torchdoctor.analyze",
        "torchdoctor.render",
        "torchdoctor.lint",
        *ABOVE_PIPELINE,
    ),
    "torchdoctor.session_read": (
        "torchdoctor.session",  # the reading helpers stand alone: session.py imports them
        "torchdoctor.collect",
        "torchdoctor.analyze",
        "torchdoctor.render",
        *ABOVE_PIPELINE,
    ),
    "torchdoctor.collect": ("torchdoctor.analyze", "torchdoctor.render", *ABOVE_PIPELINE),
    "torchdoctor.analyze": ("torchdoctor.collect", "torchdoctor.render", *ABOVE_PIPELINE),
    "torchdoctor.render": ("torchdoctor.collect", "torchdoctor.analyze.advice", *ABOVE_PIPELINE),
    "torchdoctor.lint": (
        "torchdoctor.collect",
        "torchdoctor.analyze",
        "torchdoctor.render",
        *ABOVE_PIPELINE,
    ),
    "torchdoctor.ops": tuple(
        f"torchdoctor.{name}"
        for name in ("collect", "analyze", "render", "lint", "session", "train", "workloads")
    )
    + ABOVE_PIPELINE,
    "torchdoctor.train": ("torchdoctor.render", "torchdoctor.analyze", *ABOVE_PIPELINE),
    "torchdoctor.measure": ("torchdoctor.collect", "torchdoctor.render", *ABOVE_PIPELINE),
    "torchdoctor.benchmarks": ABOVE_PIPELINE,
    "torchdoctor.workloads": ("torchdoctor.render", "torchdoctor.analyze", *ABOVE_PIPELINE),
    "torchdoctor.testing": ABOVE_PIPELINE,
}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def source_modules(root: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every .py under root."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif _is_type_checking(node):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """Module -> the torchdoctor modules it imports anywhere in its file. ``from pkg import
    name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``."""
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else source)
        resolved = set()
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a.b
                target = target.rpartition(".")[0]
            if target and _within(target, PACKAGE) and target != name:
                resolved.add(target)
        graph[name] = resolved
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import cycles: strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


MODULES = source_modules()
GRAPH = import_graph(MODULES)


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    package = tmp_path / PACKAGE
    (package / "render").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "render" / "__init__.py").write_text("")
    (package / "render" / "tree.py").write_text("X = 1\n")
    (package / "session.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torchdoctor.views\n"
        "def tree():\n    from .render import tree\n"
    )
    (package / "views.py").write_text("from torchdoctor import render\nfrom . import session\n")
    graph = import_graph(source_modules(tmp_path))
    assert graph["torchdoctor.session"] == {"torchdoctor.render.tree"}
    assert graph["torchdoctor.views"] == {"torchdoctor.render", "torchdoctor.session"}
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


def test_no_import_crosses_a_layer_backwards():
    wrong = []
    for module, imports in sorted(GRAPH.items()):
        for layer, forbidden in FORBIDDEN.items():
            if not _within(module, layer):
                continue
            wrong += [
                f"{module} imports {target}"
                for target in sorted(imports)
                if any(_within(target, prefix) for prefix in forbidden)
            ]
    assert not wrong, "imports against DESIGN.md's one direction:\n" + "\n".join(wrong)


def test_nothing_below_the_command_layer_imports_it():
    wrong = [
        f"{module} imports {target}"
        for module, imports in sorted(GRAPH.items())
        if not any(_within(module, prefix) for prefix in COMMAND_LAYER)
        for target in sorted(imports)
        if any(_within(target, prefix) for prefix in COMMAND_LAYER)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    cycles = [c for c in strongly_connected(GRAPH) if not any(c <= k for k in KNOWN_CYCLES)]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


@pytest.mark.parametrize("folder", ["src", "tests"])
def test_no_file_is_over_the_size_limit(folder):
    root = SRC.parent
    long = {
        f"{path.relative_to(root)}: {lines} lines"
        for path in sorted((root / folder).rglob("*.py"))
        if "lint_fixtures" not in path.parts
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and str(path.relative_to(root)) not in LONG_FILES
    }
    assert not long, f"split these files (over {MAX_LINES} lines):\n" + "\n".join(sorted(long))

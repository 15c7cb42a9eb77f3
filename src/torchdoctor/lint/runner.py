"""Run the rule families over source text, files and directories.

A file is read once and parsed once by :mod:`ast`; files whose text holds no trigger of any
selected family are only parsed (syntax check). Otherwise one walk links parents and each
family's ``visit_<NodeType>`` methods run on the nodes of that type. Fixes are applied with
LibCST only for files with a fixable finding (:mod:`torchdoctor.lint.fixes`).
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from torchdoctor.lint.families import FAMILIES
from torchdoctor.lint.finding import Finding
from torchdoctor.lint.names import ImportTable
from torchdoctor.lint.noqa import is_suppressed
from torchdoctor.lint.project import Project
from torchdoctor.lint.project_scan import USES_CUDA
from torchdoctor.lint.registry import RULES, resolve_codes
from torchdoctor.lint.visitor import FileContext, Fix, link_parents

#: directories never entered when walking a folder (explicit file arguments are always read).
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".venv",
        "venv",
        "__pycache__",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "build",
        "dist",
        "node_modules",
        ".eggs",
    }
)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # as Python numbers lines (not str.splitlines)
_HANDLERS: dict[type, dict[type, str]] = {}


def _syntax_finding(path: str, exc: Exception) -> Finding:
    """TD000 for a file Python's parser rejects."""
    line = getattr(exc, "lineno", None) or 1
    column = getattr(exc, "offset", None) or 1
    if isinstance(exc, SyntaxError):
        first = f"{exc.msg} (line {line})"
    else:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
    return Finding(
        "TD000",
        RULES["TD000"].severity,
        f"syntax error, file not checked: {first}",
        path,
        line,
        column,
        line,
        column + 1,
    )


def families_for(text: str, codes: set[str]) -> list[type]:
    """Rule families that are selected and whose trigger text occurs in the source.

    Example:
        >>> [c.__name__ for c in families_for("y = torch.linalg.inv(A) @ b", set(RULES))]
        ['LinalgRules']
    """
    return [cls for cls in FAMILIES if codes & set(cls.CODES) and cls.applies(text)]


def _handlers(cls: type) -> dict[type, str]:
    """``{ast.Call: 'visit_Call', ...}`` for a family class."""
    table = _HANDLERS.get(cls)
    if table is None:
        table = {
            getattr(ast, name[6:]): name
            for name in dir(cls)
            if name.startswith("visit_") and isinstance(getattr(ast, name[6:], None), type)
        }
        _HANDLERS[cls] = table
    return table


def _internal_error(path: str, exc: BaseException) -> Finding:
    return Finding(
        "TD000",
        "error",
        f"internal error in torchdoctor lint ({type(exc).__name__}: {exc}); please report it",
        path,
        1,
        1,
        1,
        2,
    )


def lint_text(
    raw: str | bytes,
    path: str = "<string>",
    codes: set[str] | None = None,
    project: object | None = None,
) -> tuple[list[Finding], list[Fix]]:
    """Findings and fixes for one source text (noqa honoured; a syntax error is TD000).

    Example:
        >>> found, fixes = lint_text("import torch\\ns = torch.cuda.amp.GradScaler()\\n")
        >>> [f.code for f in found], len(fixes)
        (['TD504'], 1)
    """
    codes = set(RULES) if codes is None else codes
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        tree = ast.parse(raw)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return ([_syntax_finding(path, exc)] if "TD000" in codes else []), []
    families = families_for(text, codes)
    if not families:
        return [], []
    try:
        return _run_families(tree, text, path, codes, families, project)
    except Exception as exc:  # noqa: BLE001 - reported, never swallowed silently
        return [_internal_error(path, exc)], []


def _run_families(tree, text, path, codes, families, project):
    nodes = link_parents(tree)
    if project is None:
        project = Project()
        project.add(path, text, tree)
    context = FileContext(
        path=path,
        source=text,
        uses_cuda=bool(USES_CUDA.search(text)),
        names=ImportTable(tree, nodes),
        lines=_LINE_BREAK.split(text),
        tree=tree,
        project=project,
    )
    visitors = [cls(context) for cls in families]
    plan: dict[type, list] = {}
    for visitor in visitors:
        for kind, name in _handlers(type(visitor)).items():
            plan.setdefault(kind, []).append(getattr(visitor, name))
    for node in nodes:
        handlers = plan.get(type(node))
        if handlers:
            for handler in handlers:
                handler(node)
    found = [f for v in visitors for f in v.findings]
    fixes = [fx for v in visitors for fx in v.fixes]
    seen: set[tuple] = set()
    out = []
    for finding in found:
        # (one finding per place, and one per message on a line, but for fixes, each its own:
        # `z[b] - z[b].mean(0)` slices `z` twice and says the same thing twice)
        fix_column = finding.column if finding.fixable else None
        keys = ((finding.code, finding.line, finding.column),
                (finding.code, finding.line, finding.message, fix_column))  # fmt: skip
        if finding.code in codes and seen.isdisjoint(keys):
            if not is_suppressed(finding, context.lines):
                seen.update(keys)
                out.append(finding)
    out = [f for f in out if not _explained(f, out)]
    kept = {(f.line, f.column, f.code) for f in out if f.fixable}
    fixes = [fx for fx in fixes if (fx.line, fx.column, fx.code) in kept]
    return sorted(out, key=Finding.sort_key), fixes


def _explained(finding: Finding, findings: Sequence[Finding]) -> bool:
    """Whether ``finding`` lies inside another finding whose rule counts it as a part of its
    pattern (:attr:`Rule.explains`), or on the last line of that finding's pattern (a label
    remap's lookup, ``pattern_lines``): the `.numpy()` feeding scipy's assignment is TD303's."""
    start, end = (finding.line, finding.column), (finding.end_line, finding.end_column)
    for other in findings:
        rule = RULES.get(other.code)
        if other is finding or rule is None or finding.code not in rule.explains:
            continue
        if (other.line, other.column) <= start and end <= (other.end_line, other.end_column):
            return True
        if other.pattern_lines and finding.line == other.pattern_lines[1]:
            return True
    return False


def lint_source_with_fixes(
    text: str | bytes,
    path: str = "<string>",
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
) -> tuple[list[Finding], list[Fix]]:
    """:func:`lint_source` that also returns the fixes of the fixable findings.

    Example:
        >>> found, fixes = lint_source_with_fixes("def f(o):\\n    o.zero_grad(set_to_none=False)\\n")
        >>> [f.code for f in found], [x.code for x in fixes]
        (['TD703'], ['TD703'])
    """
    return lint_text(text, path, resolve_codes(select, ignore))


def lint_source(
    text: str | bytes,
    path: str = "<string>",
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
) -> list[Finding]:
    """Lint one source text; a syntax error is reported as a TD000 finding.

    Example:
        >>> src = "import torch as T\\ny = T.linalg.inv(A) @ b\\n"
        >>> [f.code for f in lint_source(src)]
        ['TD101']
    """
    return lint_text(text, path, resolve_codes(select, ignore))[0]


def fix_source(
    text: str, select: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> str:
    """Return ``text`` with every safe autofix applied (findings suppressed by noqa are kept).

    Example:
        >>> print(fix_source("import torch\\ns = torch.cuda.amp.GradScaler()\\n"), end="")
        import torch
        s = torch.amp.GradScaler("cuda")
    """
    from torchdoctor.lint.fixes import apply_fixes

    _, fixes = lint_source_with_fixes(text, select=select, ignore=ignore)
    return apply_fixes(text, fixes).decode("utf-8") if fixes else text


def iter_python_files(
    paths: Sequence[str | os.PathLike], exclude: Sequence[str] = ()
) -> Iterator[str]:
    """Python files named by ``paths`` (folders are walked, sorted); a missing path raises.

    Example:
        >>> list(iter_python_files([__file__]))[0].endswith("runner.py")
        True
    """
    missing = [str(p) for p in paths if not os.path.exists(p)]
    if missing:
        raise ValueError(f"path(s) not found: {', '.join(missing)}; pass existing files or folders")

    def excluded(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(Path(path).name, pat) for pat in exclude
        )

    for root in paths:
        root = os.fspath(root)
        if os.path.isfile(root):
            if not excluded(root):
                yield root
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(
                d
                for d in dirs
                if d not in SKIP_DIRS
                and not d.endswith(".egg-info")
                and not excluded(os.path.join(folder, d))
            )
            for name in sorted(files):
                full = os.path.join(folder, name)
                if name.endswith(".py") and not excluded(full):
                    yield full


def lint_file(
    path: str, codes: set[str], fix: bool = False, project: object | None = None
) -> tuple[list[Finding], bytes | None, bytes | None]:
    """Lint one file. With ``fix``, also return its original and fixed bytes (same if no fix).

    Any unexpected exception inside the linter becomes a TD000 finding naming it, so one
    odd file never stops a run.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "train.py"
        >>> _ = path.write_text("import torch\\ns = torch.cuda.amp.GradScaler()\\n")
        >>> findings, original, fixed = lint_file(str(path), set(RULES), fix=True)
        >>> [f.code for f in findings], fixed
        (['TD504'], b'import torch\\ns = torch.amp.GradScaler("cuda")\\n')
    """
    raw = Path(path).read_bytes()
    findings, fixes = lint_text(raw, path, codes, project)
    if not fix:
        return findings, None, None
    if not fixes:
        return findings, raw, raw
    from torchdoctor.lint.fixes import apply_fixes

    try:
        return findings, raw, apply_fixes(raw, fixes)
    except Exception as exc:  # noqa: BLE001 - reported, never swallowed silently
        return [*findings, _internal_error(path, exc)], None, None


_WORKER_PROJECT: Project | None = None


def _set_worker_project(project: Project) -> None:
    global _WORKER_PROJECT
    _WORKER_PROJECT = project


def _lint_file_job(args: tuple[str, frozenset[str], bool, Project | None]):
    return lint_file(args[0], set(args[1]), args[2], args[3] or _WORKER_PROJECT)


def _per_file_codes(path: str, codes: set[str], per_file_ignores: dict[str, list[str]]) -> set[str]:
    out = set(codes)
    for pattern, ignored in per_file_ignores.items():
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(Path(path).name, pattern):
            out -= {c for c in RULES if any(c.startswith(i.strip().upper()) for i in ignored)}
    return out


def lint_paths(
    paths: Sequence[str | os.PathLike],
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    *,
    exclude: Sequence[str] = (),
    per_file_ignores: dict[str, list[str]] | None = None,
    jobs: int = 1,
) -> list[Finding]:
    """Lint files and folders; returns all findings sorted by path and position.

    Raises ValueError for a missing path or an unknown code.

    Example:
        >>> import torchdoctor.lint.registry as r
        >>> lint_paths([r.__file__])
        []
    """
    return [
        f
        for f, _, _ in _run(paths, select, ignore, exclude, per_file_ignores, jobs, False)
        for f in f
    ]


def _run(paths, select, ignore, exclude, per_file_ignores, jobs, fix):
    codes = resolve_codes(select, ignore)
    files = list(iter_python_files(paths, exclude))
    project = Project(files)
    work = [
        (p, frozenset(_per_file_codes(p, codes, per_file_ignores or {})), fix, project)
        for p in files
    ]
    if jobs > 1 and len(work) > 1:
        work = [(*w[:3], None) for w in work]  # the project travels once per worker
        with ProcessPoolExecutor(
            max_workers=jobs, initializer=_set_worker_project, initargs=(project,)
        ) as pool:
            results = list(pool.map(_lint_file_job, work, chunksize=8))
    else:
        results = [_lint_file_job(w) for w in work]
    return [
        (sorted(r[0], key=Finding.sort_key), path, r[1:]) for (path, *_), r in zip(work, results)
    ]


def fix_paths(
    paths: Sequence[str | os.PathLike],
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    *,
    exclude: Sequence[str] = (),
    per_file_ignores: dict[str, list[str]] | None = None,
    jobs: int = 1,
) -> list[tuple[str, list[Finding], bytes, bytes]]:
    """Lint and compute fixes; returns ``(path, findings, original, fixed)`` per file with a
    fixable finding. Nothing is written (the CLI writes or diffs).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "train.py").write_text("import torch\\ns = torch.cuda.amp.GradScaler()\\n")
        >>> [(Path(p).name, [f.code for f in found], fixed) for p, found, _, fixed in fix_paths([folder])]
        [('train.py', ['TD504'], b'import torch\\ns = torch.amp.GradScaler("cuda")\\n')]
    """
    out = []
    for findings, path, (original, fixed) in _run(
        paths, select, ignore, exclude, per_file_ignores, jobs, True
    ):
        out.append((path, findings, original, fixed))
    return out

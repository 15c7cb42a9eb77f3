"""The functions each module ``forward`` of a file calls, resolved to the file that defines them.

A helper run on every forward call reads tensors on the host on every call too (DETR's
``generalized_box_iou``, whose asserts read box tensors, called from
``HungarianMatcher.forward``). A name alone matches too much across a project (``interpolate``,
``to``, ``run`` are everywhere), so a call counts only where the caller's own imports say which
module it comes from: ``f(...)`` defined at the caller's module level, or imported with ``from
pkg.mod import f``; ``mod.f(...)`` with ``mod`` imported as a module (``from pkg import mod``,
``import pkg.mod as mod``). :class:`torchdoctor.lint.project.Project` indexes these once.

Example:
    >>> src = "from util.box_ops import iou\\nclass M:\\n    def forward(self, a):\\n        return iou(a)\\n"
    >>> [(c.name, c.module, c.owner) for c in forward_calls("m.py", ast.parse(src))]
    [('iou', 'util.box_ops', 'M.forward')]
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ForwardCall:
    """One call of a module-level function in a ``forward``: its name, the module the caller's
    imports resolve it to (dotted; the caller's own path for its own functions), where.

    Example:
        >>> ForwardCall("iou", "util.box_ops", "m.py", 4, "M.forward").defined_in("/p/util/box_ops.py")
        True
    """

    name: str
    module: str
    file: str
    line: int
    owner: str

    def defined_in(self, path: str) -> bool:
        """Whether the function it calls can be the one defined in ``path``."""
        if self.module == self.file:  # (the caller's own module-level function)
            return Path(path).resolve() == Path(self.file).resolve()
        parts = Path(path).with_suffix("").parts
        if parts and parts[-1] == "__init__":
            parts = parts[:-1]
        tail = self.module.lstrip(".").split(".")
        return bool(tail) and tuple(parts[-len(tail):]) == tuple(tail)


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted module or ``module.attr`` it names (relative imports keep
    their package path without the dots: the file's location is matched by its tail).

    Example:
        >>> sorted(_imports(ast.parse("import a.b as c\\nfrom .d import e\\nimport f.g")).items())
        [('c', 'a.b'), ('e', 'd.e'), ('f', 'f')]
    """
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".", 1)[0]
                names[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            package = (node.module or "").strip(".")
            for alias in node.names:
                names[alias.asname or alias.name] = f"{package}.{alias.name}".strip(".")
    return names


def _run_by_forward(cls: ast.ClassDef, forward: ast.AST) -> list[ast.AST]:
    """``forward`` and the methods of ``cls`` it runs through ``self.m(...)``, up to two calls
    deep (NeRF's ``forward`` -> ``self.run`` -> ``composite``).

    Example:
        >>> src = "class M:\\n    def forward(self):\\n        self.run()\\n    def run(self):\\n        pass\\n"
        >>> cls = ast.parse(src).body[0]
        >>> [f.name for f in _run_by_forward(cls, cls.body[0])]
        ['forward', 'run']
    """
    methods = {m.name: m for m in cls.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found, frontier = [forward], [forward]
    for _ in range(2):
        called = {c.func.attr for f in frontier for c in ast.walk(f)
                  if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                  and isinstance(c.func.value, ast.Name) and c.func.value.id == "self"}  # fmt: skip
        frontier = [methods[n] for n in sorted(called) if n in methods and methods[n] not in found]
        found += frontier
    return found


def _called_objects(tree: ast.Module, cls: ast.ClassDef, run: list[ast.AST]) -> list[ast.AST]:
    """The ``__call__`` (and ``__init__``, for one built there) of the file's classes whose
    instances the functions ``run`` call: ``corr_fn = CorrBlock(f1, f2)`` then
    ``corr_fn(coords)`` in RAFT's forward, or ``self.sampler = Sampler()`` in ``cls`` then
    ``self.sampler(x)``; with the methods each runs through ``self`` (the object is no
    module: its ``__call__`` runs inside the forward).

    Example:
        >>> src = ("class Corr:\\n    def __init__(self):\\n        self.r = 4\\n"
        ...        "    def __call__(self, c):\\n        return sample(c)\\n"
        ...        "class M:\\n    def forward(self, x):\\n        fn = Corr()\\n        return fn(x)\\n")
        >>> tree = ast.parse(src)
        >>> [f.name for f in _called_objects(tree, tree.body[1], tree.body[1].body)]
        ['__init__', '__call__']
    """
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    held: dict[str, str] = {}  # `self.attr` / a local name -> the class it was built from
    for scope, fields in ((cls, True), *((f, False) for f in run)):
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and isinstance(
                    node.value.func, ast.Name) and node.value.func.id in classes:  # fmt: skip
                for target in node.targets:
                    if fields == isinstance(target, ast.Attribute):
                        held[ast.unparse(target)] = node.value.func.id
    found: list[ast.AST] = []
    for call in (c for f in run for c in ast.walk(f) if isinstance(c, ast.Call)):
        made = classes.get(held.get(ast.unparse(call.func), ""))
        call_method = next((m for m in getattr(made, "body", ()) if isinstance(
            m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name == "__call__"), None)  # fmt: skip
        if made is None or call_method is None or made is cls:
            continue
        init = [m for m in made.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                and m.name == "__init__" and not isinstance(call.func, ast.Attribute)]  # fmt: skip
        found += [m for m in (*init, *_run_by_forward(made, call_method))
                  if m not in found and m not in run]  # fmt: skip
    return found


def forward_calls(path: str, tree: ast.Module) -> list[ForwardCall]:
    """Every call in a module's ``forward`` in ``tree`` (or in a method of its class that the
    forward runs, :func:`_run_by_forward`) that its imports resolve to a function of a module
    (``self.f(...)``, methods of objects and unresolved names are left out)."""
    imports = _imports(tree)
    local = {
        n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    found = []
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef):
            continue
        for forward in cls.body:
            if not (isinstance(forward, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and forward.name == "forward"):
                continue  # fmt: skip
            run = _run_by_forward(cls, forward)
            run += _called_objects(tree, cls, run)
            for call in (c for f in run for c in ast.walk(f)):
                if not isinstance(call, ast.Call):
                    continue
                func, module = call.func, None
                if isinstance(func, ast.Name):
                    name = func.id
                    if name in local:
                        module = path
                    elif "." in imports.get(name, ""):
                        module = imports[name].rsplit(".", 1)[0]
                elif isinstance(func, ast.Attribute):
                    name = func.attr
                    base = ast.unparse(func.value)
                    head, _, rest = base.partition(".")
                    if head in imports:  # (an object's method resolves to nothing)
                        module = f"{imports[head]}.{rest}".strip(".")
                if module:
                    found.append(ForwardCall(name, module, path, call.lineno,
                                             f"{cls.name}.forward"))  # fmt: skip
    return found


def methods_of_built_objects(tree: ast.Module) -> dict[int, str]:
    """The methods of this file's classes (by ``id``) that a module's ``forward`` runs on an
    object it builds in the call: davidmrau/mixture-of-experts' ``dispatcher =
    SparseDispatcher(n, gates)`` (its ``__init__``), then ``dispatcher.dispatch(x)``, with
    the methods each runs through ``self``; the value is ``Cls.forward``.

    Example:
        >>> src = ("class D:\\n    def __init__(self, g):\\n        self.n = g.tolist()\\n"
        ...        "class M:\\n    def forward(self, x):\\n        d = D(x)\\n        return x\\n")
        >>> tree = ast.parse(src)
        >>> list(methods_of_built_objects(tree).values())
        ['M.forward']
    """
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    found: dict[int, str] = {}
    for cls in classes.values():
        forward = next((m for m in cls.body if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)
                        and m.name == "forward"), None)  # fmt: skip
        for f in _run_by_forward(cls, forward) if forward is not None else ():
            for node in ast.walk(f):
                if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                        node.targets[0], ast.Name) and isinstance(node.value, ast.Call)
                        and getattr(node.value.func, "id", None) in classes):  # fmt: skip
                    continue
                made, name = classes[node.value.func.id], node.targets[0].id  # type: ignore[attr-defined]
                methods = {m.name: m for m in made.body
                           if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)}  # fmt: skip
                used = {"__init__"} | {c.func.attr for c in ast.walk(f) if isinstance(c, ast.Call)
                                       and isinstance(c.func, ast.Attribute)
                                       and getattr(c.func.value, "id", None) == name}  # fmt: skip
                for m in (methods[u] for u in sorted(used) if u in methods and made is not cls):
                    for run in _run_by_forward(made, m):
                        found.setdefault(id(run), f"{cls.name}.forward")
    return found

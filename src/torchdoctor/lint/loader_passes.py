"""Whether one DataLoader object is iterated once (TD403 reads it): its workers start once
whatever ``persistent_workers`` says, so the option buys nothing.

A feature-extraction or export script builds its loader, hands it to one function that walks
it once and exits (vq-vae-2-pytorch's ``extract_code.py``: ``extract(env, loader, model,
device)``, called once at the script's top level, runs ``for img, _, filename in
tqdm(loader)``). Followed: the name's one use (``len(loader)``, ``loader.dataset`` aside)
outside any loop (but one over ``range(1)``), as a ``for`` loop's iterable (also through ``tqdm(...)`` /
``enumerate(...)``, or a name assigned such a wrapper), or as an argument of a function of
the file whose parameter is, in turn, walked once (up to two calls down: SimCLR's
get_features hands it to inference); or one batch taken with ``next(...)``
(``next(iter(loader))``, or ``it = iter(loader)`` then ``next(it)`` once); or one iterator
made outside any loop, ``it = iter(loader)``, however many batches are drawn from it.
"""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

from torchdoctor.lint.pinned_copies import LOOP_WRAPPERS
from torchdoctor.lint.visitor import FOR, FUNCTIONS, dotted


def iterated_once(rules, name: str, scope: ast.AST, depth: int = 3, bound_at: ast.AST | None = None) -> bool:
    """``name`` (a loader bound in ``scope``) is iterated by exactly one pass (see the module
    docstring); ``rules`` is a rule visitor (its ``parent``, ``enclosing_loops`` and
    ``context``). With ``bound_at`` (the statement binding it), only the uses before the
    name is bound again count: each branch of ``if dataset == ...:`` building its own
    ``dataloader`` and taking one batch from it.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("from torch.utils.data import DataLoader\\n"
        ...        "def export(loader, model):\\n    for x in loader:\\n        model(x)\\n"
        ...        "def main(ds, model):\\n    loader = DataLoader(ds, num_workers=4)\\n"
        ...        "    export(loader, model)\\n")
        >>> [f.code for f in lint_source(src)]
        []
    """
    return _one_pass(rules, name, scope, depth, bound_at) is not None


def one_batch(rules, call: ast.Call) -> bool:
    """The loader ``call`` builds is bound to a name whose one use takes one batch with
    ``next(...)`` (``refer_image, _ = next(iter(dataloader))``): pinning that batch saves
    nothing (TD402 stays silent), nor do persistent workers."""
    assign = rules.parent(call)
    if not (isinstance(assign, ast.Assign) and len(assign.targets) == 1
            and isinstance(assign.targets[0], ast.Name)):  # fmt: skip
        return False
    return _one_pass(rules, assign.targets[0].id, rules.enclosing_scope(call), 2, assign) == "batch"


def _one_pass(rules, name: str, scope: ast.AST, depth: int, bound_at: ast.AST | None) -> str | None:
    """How ``name`` is walked when that is once (:func:`iterated_once`): ``"batch"`` for one
    ``next(...)``, ``"loop"`` for one loop; None otherwise."""
    uses = [n for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id == name
            and isinstance(n.ctx, ast.Load) and not _measured(rules, n)
            and rules.enclosing_scope(n) is scope]  # fmt: skip
    if bound_at is not None:
        stores = [n.lineno for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id == name
                  and isinstance(n.ctx, ast.Store) and n.lineno > bound_at.lineno]  # fmt: skip
        uses = [u for u in uses if bound_at.lineno < u.lineno < min(stores, default=u.lineno + 1)]
    if len(uses) != 1 or depth <= 0:
        return None
    loops = [lp for lp in rules.enclosing_loops(uses[0]) if not _runs_once(lp)]
    if loops:
        return None  # (davidmrau/mixture-of-experts: for epoch in range(1), one pass)
    child, above = uses[0], rules.parent(uses[0])
    while isinstance(above, ast.Call) and child in above.args and (
            (dotted(above.func) or "").rsplit(".", 1)[-1] in LOOP_WRAPPERS):  # fmt: skip
        child, above = above, rules.parent(above)
    if isinstance(above, (*FOR, ast.comprehension)) and above.iter is child:
        return "loop"
    if isinstance(above, ast.Call) and getattr(above.func, "id", None) == "next" and (
            above.args and above.args[0] is child):  # fmt: skip
        return "batch"  # (refer_image, _ = next(iter(loader)), NCSN's inpainting test)
    if isinstance(above, ast.Assign) and above.value is child and child is not uses[0] and (
            len(above.targets) == 1 and isinstance(above.targets[0], ast.Name)):  # fmt: skip
        inner = _one_pass(rules, above.targets[0].id, scope, depth, above)  # (pbar = tqdm(loader))
        one_iterator = isinstance(child, ast.Call) and getattr(child.func, "id", None) == "iter"
        return "loop" if inner is None and one_iterator else inner  # (it = iter(loader), next()s)
    if isinstance(above, ast.Call) and child is uses[0] and child in above.args:
        tree = rules.context.tree
        function = next((f for f in getattr(tree, "body", ()) if isinstance(f, FUNCTIONS)
                         and f.name == getattr(above.func, "id", None)), None)  # fmt: skip
        params = [a.arg for a in (*function.args.posonlyargs, *function.args.args)] if (
            function is not None) else []  # fmt: skip
        position = above.args.index(child)
        return _one_pass(rules, params[position], function, depth - 1, None) if (
            position < len(params)) else None  # fmt: skip
    return None


def walked_where_built(rules, call: ast.Call) -> bool:
    """The loader ``call`` builds is a ``for`` loop's iterable itself (``for x, y in
    DataLoader(ds, num_workers=2):``, through ``tqdm`` / ``enumerate``) outside any other
    loop (but one over ``range(1)``): one pass, its workers start once whatever
    ``persistent_workers`` says (inside an epoch loop, TD403 says it is built anew).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("from torch.utils.data import DataLoader\\n"
        ...        "def test(model, ds):\\n"
        ...        "    for x in DataLoader(ds, batch_size=8, num_workers=2):\\n"
        ...        "        model(x)\\n")
        >>> [f.code for f in lint_source(src, select=["TD403"])]
        []
    """
    child, above = call, rules.parent(call)
    while isinstance(above, ast.Call) and child in above.args and (
            (dotted(above.func) or "").rsplit(".", 1)[-1] in LOOP_WRAPPERS):  # fmt: skip
        child, above = above, rules.parent(above)
    return isinstance(above, (*FOR, ast.comprehension)) and above.iter is child and not [
        lp for lp in rules.enclosing_loops(call) if not _runs_once(lp)] or _returned_once(rules, call)


def _returned_once(rules, call: ast.Call) -> bool:
    """The loader is bound to a name its function returns (``dataloader = DataLoader(...)``;
    ``return dataloader``), and every call of that function, none imported by another file of
    the project, binds it outside any loop to a name walked once there (PyTorch-YOLOv3's
    ``detect_directory``: ``detect(model, _create_data_loader(...))``, one pass over images)."""
    assign, scope = rules.parent(call), rules.enclosing_scope(call)
    name = assign.targets[0].id if isinstance(assign, ast.Assign) and len(assign.targets) == 1 and (
        isinstance(assign.targets[0], ast.Name)) else None  # fmt: skip
    if name is None or not isinstance(scope, FUNCTIONS) or not any(
            isinstance(r, ast.Return) and isinstance(r.value, ast.Name) and r.value.id == name
            for r in ast.walk(scope)):  # fmt: skip
        return False
    project, module = rules.context.project, re.escape(Path(rules.context.path).stem)
    imported = re.compile(rf"from\s+[\w.]*\b{module}\s+import\s+(\([^)]*|[^\n]*)\b{scope.name}\b"
                          rf"|\b{module}\.{scope.name}\b")  # fmt: skip
    if project is not None and any(imported.search(project.text(p)) for p in project.paths
                                   if p != rules.context.path):  # fmt: skip
        return False  # (YOLOv3's train.py runs test.py's validation loader every epoch)
    calls = [c for c in ast.walk(rules.context.tree) if isinstance(c, ast.Call)
             and getattr(c.func, "id", None) == scope.name]  # fmt: skip
    sites = [rules.parent(c) for c in calls]
    return bool(sites) and all(
        isinstance(a, ast.Assign) and len(a.targets) == 1 and isinstance(a.targets[0], ast.Name)
        and not rules.enclosing_loops(a)
        and iterated_once(rules, a.targets[0].id, rules.enclosing_scope(a), bound_at=a)
        for a in sites)  # fmt: skip


def _measured(rules, use: ast.Name) -> bool:
    """``len(loader)``, ``loader.dataset``, ``pbar.set_description(...)``: a size or an
    attribute read, no iteration."""
    above = rules.parent(use)
    return isinstance(above, ast.Attribute) or (
        isinstance(above, ast.Call) and getattr(above.func, "id", None) == "len")


def _runs_once(loop: ast.AST) -> bool:
    """``for epoch in range(1):``: a loop over a literal count of one.

    Example:
        >>> _runs_once(ast.parse("for e in range(1): pass").body[0])
        True
        >>> _runs_once(ast.parse("for e in range(n): pass").body[0])
        False
    """
    it = loop.iter if isinstance(loop, FOR) else None
    if not (isinstance(it, ast.Call) and getattr(it.func, "id", None) == "range" and it.args):
        return False
    bounds = [a.value if isinstance(a, ast.Constant) else None for a in it.args[:2]]
    return bounds == [1] or bounds == [0, 1]


def batches_stay_on_host(rules, call: ast.Call) -> bool:
    """The loader ``call`` builds is bound to a name whose every use is a ``for`` loop (through
    ``tqdm`` / ``enumerate``) whose body calls only Python's builtins: a dataset module's demo
    (``for point, label in loader: print(point.shape)``), whose batches never go to a device.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\nfrom torch.utils.data import DataLoader\\nx = torch.ones(1).cuda()\\n"
        ...        "loader = DataLoader(ds, batch_size=4, num_workers=2)\\n"
        ...        "for p, y in loader:\\n    print(p.shape)\\n")
        >>> [f.code for f in lint_source(src)]
        []
    """
    assign, scope = rules.parent(call), rules.enclosing_scope(call)
    if not (isinstance(assign, ast.Assign) and len(assign.targets) == 1
            and isinstance(assign.targets[0], ast.Name)):  # fmt: skip
        return False
    name = assign.targets[0].id
    uses = [n for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id == name
            and isinstance(n.ctx, ast.Load) and rules.enclosing_scope(n) is scope]  # fmt: skip
    for use in uses:
        child, above = use, rules.parent(use)
        while isinstance(above, ast.Call) and child in above.args and (
                (dotted(above.func) or "").rsplit(".", 1)[-1] in LOOP_WRAPPERS):  # fmt: skip
            child, above = above, rules.parent(above)
        if not (isinstance(above, FOR) and above.iter is child) or not all(
                isinstance(c.func, ast.Name) and hasattr(builtins, c.func.id)
                for s in above.body for c in ast.walk(s) if isinstance(c, ast.Call)):  # fmt: skip
            return False
    return bool(uses)

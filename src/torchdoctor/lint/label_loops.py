"""TD302's first-seen numbering: a Python loop that gives each new label the next id.

``for v in y.tolist(): if v not in ids: ids[v] = len(ids)`` (or ``ids.setdefault(v,
len(ids))``) walks every label on the host to build a dict that ``torch.unique(y,
return_inverse=True)`` makes in one op on the device (ids in sorted order rather than in order
of first appearance: either numbering serves a remap).
"""

from __future__ import annotations

import ast

from torchdoctor.lint.visitor import dotted, method_name


def first_seen_ids_loop(node: ast.AST) -> ast.AST | None:
    """The write of a loop ``for v in ...:`` that numbers each new ``v`` by the size of the
    dict so far (``ids[v] = len(ids)``, ``ids.setdefault(v, len(ids))``); None.

    Example:
        >>> src = "for lab in y.tolist():\\n    if lab not in m:\\n        m[lab] = len(m)\\n"
        >>> ast.unparse(first_seen_ids_loop(ast.parse(src).body[0]))
        'm[lab] = len(m)'
        >>> first_seen_ids_loop(ast.parse("for v in y:\\n    m[v] = v * 2\\n").body[0]) is None
        True
    """
    target = getattr(node, "target", None)
    if not isinstance(node, ast.For) or not isinstance(target, ast.Name):
        return None
    stack: list[ast.AST] = list(node.body)
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            write = stmt.targets[0]
            if (isinstance(write, ast.Subscript) and _keyed_by(write.slice, target.id)
                    and _size_of(stmt.value, dotted(write.value))):
                return stmt  # fmt: skip
        if isinstance(stmt, ast.Expr | ast.Assign) and isinstance(stmt.value, ast.Call):
            call = stmt.value
            if (method_name(call) == "setdefault" and len(call.args) == 2
                    and _keyed_by(call.args[0], target.id)
                    and _size_of(call.args[1], dotted(call.func.value))):  # type: ignore[attr-defined]
                return stmt  # fmt: skip
        stack.extend(n for n in ast.iter_child_nodes(stmt) if isinstance(n, ast.stmt))
    return None


def _keyed_by(key: ast.AST, name: str) -> bool:
    """``v`` or ``int(v)``: the loop's label itself."""
    if isinstance(key, ast.Call) and dotted(key.func) == "int" and len(key.args) == 1:
        key = key.args[0]
    return isinstance(key, ast.Name) and key.id == name


def _size_of(value: ast.AST, container: str | None) -> bool:
    """``len(container)``: the next free id."""
    return (container is not None and isinstance(value, ast.Call) and dotted(value.func) == "len"
            and len(value.args) == 1 and dotted(value.args[0]) == container)  # fmt: skip


def keyed_by_rows(comp: ast.DictComp) -> bool:
    """A dict keyed by whole rows, ``{tuple(s): i for i, s in enumerate(states.tolist())}`` (a
    GFlowNet's index of grid states, an edge index): a lookup of vectors, not a remap of labels.

    Example:
        >>> [keyed_by_rows(ast.parse(s, mode="eval").body) for s in
        ...  ("{tuple(s): i for i, s in enumerate(x)}", "{v: i for i, v in enumerate(x)}")]
        [True, False]
    """
    key = comp.key
    return isinstance(key, ast.Call) and dotted(key.func) == "tuple"

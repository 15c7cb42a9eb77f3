"""Tensors whose items a loop over a batch walks: the batch itself, or a tensor made from it
that keeps its leading dimension (``energy = feature_map.pow(2).sum(1)``, then
``for b in range(B): topk(energy[b].flatten(), k)``): TD304's per-item loops."""

from __future__ import annotations

import ast
from typing import Any

from torchdoctor.lint.syntax import dotted
from torchdoctor.lint.visitor import method_name

#: calls that can move or merge a tensor's leading dimension (a batch derived through them may
#: no longer be indexed by item)
_RESHAPES = frozenset({"view", "reshape", "flatten", "permute", "transpose", "t", "movedim",
                       "swapaxes", "unflatten", "squeeze", "unsqueeze", "expand", "repeat",
                       "T", "mT", "flip", "roll", "cat", "stack", "split", "chunk"})  # fmt: skip


def keeps_leading_dim(expr: ast.AST, batch: str) -> bool:
    """``expr`` is ``batch`` through ops that keep its leading (batch) dimension: method chains
    and ``torch.``/``F.`` calls on it, arithmetic, reductions over other dims
    (``feature_map.pow(2).sum(1)``); not a reduction over dim 0 or a reshape.

    Example:
        >>> keeps_leading_dim(ast.parse("x.pow(2).sum(1)").body[0].value, "x")
        True
        >>> keeps_leading_dim(ast.parse("x.sum(0)").body[0].value, "x")
        False
        >>> keeps_leading_dim(ast.parse("proj(torch.cat([table[x], t], 1))").body[0].value, "x")
        True
    """
    roots = 0
    beside = {id(n.func) for n in ast.walk(expr) if _joins_beside(n)}  # (torch.cat(.., 1))
    for node in ast.walk(expr):
        if isinstance(node, ast.Name) and node.id == batch:
            roots += 1
        if id(node) in beside or isinstance(node, ast.Call) and id(node.func) in beside:
            continue
        if isinstance(node, ast.Attribute) and node.attr in _RESHAPES:
            if node.attr == "flatten" and _flattens_after_first(parent_of(expr, node)):
                continue  # (x.flatten(2): the leading dimensions stay)
            return False
        if isinstance(node, ast.Subscript) and dotted(node.slice) == batch:
            continue  # (memory[nodes]: rows gathered by the batch's ids, one per item)
        if isinstance(node, ast.Subscript | ast.Lambda | ast.comprehension):
            return False
        if isinstance(node, ast.Call):
            name = (dotted(node.func) or "").rsplit(".", 1)[-1]
            if name in _RESHAPES and not (name == "flatten" and _flattens_after_first(node)):
                return False
            dims = [k.value for k in node.keywords if k.arg in ("dim", "axis")]
            if method_name(node) and node.args and (dotted(node.func) or "").split(".")[0] not in {
                    "torch", "F"}:  # (x.sum(0); torch.cat(xs, 1)'s dim is its second argument)
                dims.append(node.args[0])
            elif len(node.args) > 1:
                dims.append(node.args[1])
            if any(isinstance(d, ast.Constant) and d.value == 0 for d in dims):
                return False
            if any(isinstance(d, ast.Tuple | ast.List) for d in dims):
                return False
            if method_name(node) and not node.args and not node.keywords and name in {
                    "sum", "mean", "max", "min", "prod", "norm", "std", "var", "amax", "amin",
                    "any", "all", "argmax", "argmin", "item"}:  # fmt: skip
                return False  # (over every dim: a scalar)
    return roots == 1


def _joins_beside(node: ast.AST) -> bool:
    """``torch.cat([a, b], 1)`` / ``torch.cat(xs, dim=-1)``: joined along a later dimension, so
    the leading one stays."""
    if not (isinstance(node, ast.Call) and (dotted(node.func) or "").rsplit(".", 1)[-1] in (
            "cat", "concat", "concatenate")):  # fmt: skip
        return False
    dim = next((k.value for k in node.keywords if k.arg in ("dim", "axis")), None)
    dim = dim if dim is not None else (node.args[1] if len(node.args) > 1 else None)
    if isinstance(dim, ast.UnaryOp) and isinstance(dim.op, ast.USub):
        return isinstance(dim.operand, ast.Constant)
    return isinstance(dim, ast.Constant) and isinstance(dim.value, int) and dim.value > 0


def _flattens_after_first(call: ast.AST | None) -> bool:
    """``x.flatten(2)`` / ``torch.flatten(x, 1)`` / ``x.flatten(start_dim=1)``: dimension 0
    stays as it is."""
    if not isinstance(call, ast.Call):
        return False
    start = [k.value for k in call.keywords if k.arg == "start_dim"]
    args = call.args[1:] if isinstance(call.func, ast.Attribute) and dotted(
        call.func.value) == "torch" else call.args  # fmt: skip
    value = (start or args[:1] or [None])[0]
    return isinstance(value, ast.Constant) and isinstance(value.value, int) and value.value >= 1


def parent_of(root: ast.AST, child: ast.AST) -> ast.AST | None:
    """The node of ``root``'s tree whose direct child is ``child`` (None for ``root``).

    Example:
        >>> tree = ast.parse("x = f(y)")
        >>> call = tree.body[0].value
        >>> type(parent_of(tree, call)).__name__, parent_of(tree, tree)
        ('Assign', None)
    """
    return next((n for n in ast.walk(root) if child in ast.iter_child_nodes(n)), None)


def indexes_at(loop: ast.For, batch: str) -> bool:
    """The loop's body indexes ``batch`` at the loop variable (``x[b]``, ``x[b, :2]``).

    Example:
        >>> indexes_at(ast.parse("for b in range(3):\\n    f(x[b])").body[0], "x")
        True
    """
    index = loop.target.id  # type: ignore[attr-defined]
    return any(isinstance(n, ast.Subscript) and dotted(n.value) == batch
               and first_index(n.slice) == index
               for stmt in loop.body for n in ast.walk(stmt))  # fmt: skip


def derived_batch(rules, loop: ast.For, scope: ast.AST, batch: str) -> str | None:
    """A name the body indexes at the loop variable, assigned once in ``scope`` before the loop
    from ``batch`` through ops that keep its items (:func:`keeps_leading_dim`); ``rules``: the
    visitor (its ``assigned_values``).

    Example:
        >>> class Rules:  # (the visitor's: the values assigned to a name in a scope)
        ...     def assigned_values(self, scope, name):
        ...         return [n.value for n in ast.walk(scope) if isinstance(n, ast.Assign)
        ...                 and n.targets[0].id == name]
        >>> fn = ast.parse("def f(m):\\n    e = m.sum(1)\\n    for b in range(4):\\n"
        ...                "        g(e[b])\\n").body[0]
        >>> derived_batch(Rules(), fn.body[1], fn, "m")
        'e'
    """
    index = loop.target.id  # type: ignore[attr-defined]
    for node in (n for stmt in loop.body for n in ast.walk(stmt)):
        name = dotted(node.value) if isinstance(node, ast.Subscript) else None
        if not name or "." in name or first_index(node.slice) != index:
            continue
        values = rules.assigned_values(scope, name)
        if (len(values) == 1 and values[0].lineno < loop.lineno
                and keeps_leading_dim(values[0], batch)):
            return name
    return None


def first_index(index: ast.AST) -> str | None:
    """``i`` in ``x[i]``, ``x[i, :]``, ``x[i:i + 1]``.

    Example:
        >>> first_index(ast.parse("x[i:i + 1]").body[0].value.slice)
        'i'
    """
    if isinstance(index, ast.Tuple) and index.elts:
        index = index.elts[0]
    if isinstance(index, ast.Slice):
        index = index.lower  # type: ignore[assignment]
    return dotted(index) if index is not None else None


def sized_by_shape(it: ast.AST) -> bool:
    """``range(x.shape[0])`` or ``range(x.size(0))``: ``x`` is a tensor (``len(x)`` could be
    of a list).

    Example:
        >>> [sized_by_shape(ast.parse(f"range({n})", mode="eval").body)
        ...  for n in ("x.size(0)", "x.shape[0]", "len(x)")]
        [True, True, False]
    """
    n = it.args[0] if isinstance(it, ast.Call) and it.args else None
    return isinstance(n, ast.Subscript) or (isinstance(n, ast.Call) and method_name(n) == "size")


def len_of(it: ast.AST) -> str | None:
    """``x`` for ``range(len(x))`` (a plain name), else None.

    Example:
        >>> len_of(ast.parse("range(len(batch))", mode="eval").body)
        'batch'
    """
    if not (isinstance(it, ast.Call) and dotted(it.func) == "range" and len(it.args) == 1):
        return None
    n = it.args[0]
    if not (isinstance(n, ast.Call) and dotted(n.func) == "len" and len(n.args) == 1):
        return None
    name = dotted(n.args[0])
    return name if name and "." not in name else None


def sliced_parameter(loop: ast.For, rules: Any) -> str | None:
    """``x`` for ``for i in range(len(x))`` over a parameter ``x`` that the body slices one item
    at a time keeping the batch dimension, ``x[i:i + 1]`` (a per-sample model call: only a
    tensor or an array is sliced so); None otherwise.

    Example:
        >>> src = "def f(m, x):\\n    for i in range(len(x)):\\n        m(x[i:i + 1])\\n"
        >>> function = ast.parse(src).body[0]
        >>> class Rules:
        ...     assigned_values = staticmethod(lambda scope, name: [])
        ...     enclosing_scope = staticmethod(lambda node: function)
        >>> sliced_parameter(function.body[0], Rules())
        'x'
    """
    index, name = loop.target, len_of(loop.iter)
    if not isinstance(index, ast.Name) or not name:
        return None
    if rules.assigned_values(rules.enclosing_scope(loop), name):
        return None  # (a parameter, never assigned in the function)
    for node in (n for stmt in loop.body for n in ast.walk(stmt)):
        if (isinstance(node, ast.Subscript) and dotted(node.value) == name
                and isinstance(node.slice, ast.Slice) and dotted(node.slice.lower) == index.id
                and isinstance(node.slice.upper, ast.BinOp)
                and isinstance(node.slice.upper.op, ast.Add)
                and dotted(node.slice.upper.left) == index.id
                and isinstance(node.slice.upper.right, ast.Constant)
                and node.slice.upper.right.value == 1):  # fmt: skip
            return name
    return None


def item_indices(index: ast.AST) -> list[str | None]:
    """The names indexing each dimension: ``[i, k]`` for ``x[i, k]``, ``[i]`` for ``x[i]``.

    Example:
        >>> item_indices(ast.parse("x[b, k]", mode="eval").body.slice)
        ['b', 'k']
    """
    parts = index.elts if isinstance(index, ast.Tuple) else [index]
    return [first_index(part) for part in parts]


def inplace_on_item(stmt: ast.AST, index: str) -> str | None:
    """``out`` for a statement ``out[index].method_(...)`` (an in-place tensor method on one
    item of ``out``: ``target[i].index_add_(0, l[i], d[i])``), else None.

    Example:
        >>> inplace_on_item(ast.parse("t[i].index_add_(0, l[i], d[i])").body[0], "i")
        't'
        >>> inplace_on_item(ast.parse("t[i + 1].copy_(t[i])").body[0], "i") is None
        True
    """
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
        return None
    method, target = call.func.attr, call.func.value
    if not (method.endswith("_") and not method.startswith("_")
            and isinstance(target, ast.Subscript) and index in item_indices(target.slice)):
        return None  # fmt: skip
    return dotted(target.value)


def sized_alike(loop: ast.For, scope: ast.AST) -> str | None:
    """The one name the body reads at the loop variable (``dt[b, :]`` in a loop over
    ``range(p.size(0))``), when it is a parameter of the function ``scope``: a tensor of the
    same batch, whose items the loop walks; None otherwise, and for a body that branches
    (``if r_det < 0:`` per item: not the same ops on each).

    Example:
        >>> fn = ast.parse("def f(p, dt):\\n    for b in range(p.size(0)):\\n"
        ...                "        out[b] = g(dt[b, :])\\n").body[0]
        >>> sized_alike(fn.body[0], fn)
        'dt'
    """
    index = loop.target.id  # type: ignore[attr-defined]
    nodes = [n for stmt in loop.body for n in ast.walk(stmt)]
    if any(isinstance(n, (ast.If, ast.IfExp)) for n in nodes):
        return None
    read = {dotted(n.value) for n in nodes if isinstance(n, ast.Subscript)
            and isinstance(n.ctx, ast.Load) and first_index(n.slice) == index}  # fmt: skip
    args = getattr(scope, "args", None)
    params = {a.arg for a in (*args.posonlyargs, *args.args)} if args else set()
    if len(read) == 1 and (read <= params or _unpacked_together(scope, next(iter(read)), loop)):
        return next(iter(read))  # type: ignore[return-value]
    return None


def _unpacked_together(scope: ast.AST, name: str | None, loop: ast.For) -> bool:
    """``name`` and a tensor whose size the loop's range counts come out of one call's tuple
    (``z, logw, logw_ = model(x)``, then ``for i in range(z.shape[0]): f(logw_[i])``): the
    outputs of one batch, of one batch size."""
    counted = {dotted(n.value) for n in ast.walk(loop.iter)
               if isinstance(n, ast.Attribute) and n.attr in ("shape", "size")} - {None, name}
    return bool(counted) and any(
        isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
        and isinstance(target := node.targets[0], ast.Tuple)
        and {name, *counted} <= {e.id for e in target.elts if isinstance(e, ast.Name)}
        for node in ast.walk(scope)
    )  # fmt: skip

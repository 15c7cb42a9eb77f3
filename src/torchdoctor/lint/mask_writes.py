"""TD603's reading of a loop: ``x[mask] = y`` writes with a boolean mask, every iteration.

A boolean-mask write runs ``nonzero`` on the mask (a host sync) unless the value is one number
(then ``index_put_`` becomes ``masked_fill_``). A name counts as a mask when it says so
(``mask``), is a comparison, is made only by boolean ops (``known = m.bool()``), or is the
condition of a ``torch.where`` / the mask of a ``masked_fill`` in the same function.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

from torchdoctor.lint.call_index import calls_named
from torchdoctor.lint.visitor import dotted, method_name


def number_literal(expr: ast.AST) -> bool:
    """``0``, ``-1.0``, ``float("-inf")``, ``math.inf``: one value on the host, which
    ``index_put_`` hands to ``masked_fill_`` (ATen's canDispatchToMaskedFill).

    Example:
        >>> [number_literal(ast.parse(c).body[0].value) for c in ("-1e9", "float('-inf')", "y")]
        [True, True, False]
    """
    if isinstance(expr, ast.UnaryOp):
        expr = expr.operand
    if isinstance(expr, ast.Constant):
        return isinstance(expr.value, int | float) and not isinstance(expr.value, complex)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        return expr.func.id in {"float", "int"} and all(
            isinstance(a, ast.Constant) for a in expr.args
        )
    return isinstance(expr, ast.Attribute) and expr.attr in {"inf", "nan", "pi", "e"}


#: methods that change a tensor's shape or place, not its values (a mask stays a mask)
_DTYPE = re.compile(r"(bool|float|half|double|int|long|short|complex|uint8|dtype)\w*$")
_KEEPS_VALUES = frozenset({"expand", "expand_as", "view", "reshape", "unsqueeze", "squeeze",
                           "flatten", "contiguous", "clone", "detach", "repeat", "permute"})  # fmt: skip


def makes_a_mask(expr: ast.AST) -> bool:
    """``m.bool()``, ``m.to(torch.bool)``, ``x > 0``, ``~known``, ``a & b``, ``torch.isin(...)``:
    a boolean tensor (a mask, whatever its name).

    Example:
        >>> [makes_a_mask(ast.parse(c).body[0].value)
        ...  for c in ("mask.bool()", "x > 0.5", "m.bool().expand_as(x)", "x * 2",
        ...            "torch.zeros(n, dtype=torch.bool)")]
        [True, True, True, False, True]
    """
    if isinstance(expr, ast.Compare) or (isinstance(expr, ast.UnaryOp)
                                         and isinstance(expr.op, ast.Invert)):
        return True  # fmt: skip
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.BitAnd, ast.BitOr)):
        return makes_a_mask(expr.left) or makes_a_mask(expr.right)
    while isinstance(expr, ast.Call) and (method_name(expr) in _KEEPS_VALUES or (  # (.expand_as(x))
            method_name(expr) in {"to", "cuda"} and not any(  # (.to(device): still booleans)
                _DTYPE.search(dotted(a) or "") for a in [*expr.args, *(k.value for k in expr.keywords)]))):
        expr = expr.func.value  # type: ignore[attr-defined]
    if isinstance(expr, ast.Call):
        if any(k.arg == "dtype" and (dotted(k.value) or "").endswith("bool") for k in expr.keywords):
            return True  # (torch.zeros(..., dtype=torch.bool): a mask made empty, then set)
        name = method_name(expr)
        if name in {"bool", "isin", "logical_and", "logical_or", "logical_not", "isnan",
                    "isfinite", "isinf", "gt", "lt", "ge", "le", "eq", "ne"}:
            return True  # fmt: skip
        return name == "to" and any((dotted(a) or "").endswith("bool") for a in expr.args)
    return False


def _reshapes(value: ast.AST, name: str) -> bool:
    """``value`` is ``name`` itself, reshaped or moved (``keep.expand_as(init)``)."""
    while isinstance(value, ast.Call) and method_name(value) in _KEEPS_VALUES:
        value = value.func.value  # type: ignore[attr-defined]
    return isinstance(value, ast.Name) and value.id == name


def mask_assignments(
    rules: Any, loop: ast.For | ast.While
) -> Iterator[tuple[ast.Assign, ast.Subscript]]:
    """TD603's ``(statement, target)``: ``x[mask] = y`` with a boolean mask (named so, a
    comparison, or a name made only by :func:`makes_a_mask`) on every iteration of ``loop``:
    in its body, or under a branch whose test is the same in every iteration (``if
    init_mask is not None:``, a config flag), a ``with``, or a loop of its own (annealed
    Langevin's corrector steps, ``for _ in range(n_steps_each):``, run in every step);
    ``x[mask] = 0`` runs as ``masked_fill_`` (no nonzero, no sync) and is left alone.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef sample(x, known, mask, ts):\\n    for t in ts.timesteps:\\n"
        ...        "        if mask is not None:\\n            x[mask] = known[mask]\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD603']
    """
    statements = list(loop.body)
    while statements:
        stmt = statements.pop(0)
        if isinstance(stmt, ast.If) and rules.is_invariant(stmt.test, loop):
            statements[:0] = [*stmt.body, *stmt.orelse]  # (the same branch every step)
        elif isinstance(stmt, (ast.With, ast.AsyncWith, ast.For, ast.While)):
            statements[:0] = stmt.body  # (an inner loop runs in every step, at least once)
        if not isinstance(stmt, ast.Assign) or number_literal(stmt.value):
            continue
        for target in stmt.targets:
            if not isinstance(target, ast.Subscript):
                continue
            index = target.slice  # (x[:, mask] = ..., x[..., mask, c] = ...: one part of it)
            parts = index.elts if isinstance(index, ast.Tuple) else [index]
            if any(_mask_index(rules, loop, part) for part in parts):
                yield stmt, target


def _mask_index(rules: Any, loop: ast.AST, index: ast.AST) -> bool:
    """``index`` is a boolean mask: named so, a comparison or another expression
    :func:`makes_a_mask` (``~keep``, ``a & b``), a name made only by :func:`makes_a_mask`, or
    the condition of a ``torch.where`` in the function."""
    if isinstance(index, ast.Slice | ast.Constant):
        return False
    if makes_a_mask(index):
        return True  # (latents[~latent_mask] = noised[~latent_mask]: the inverse of a mask)
    name = (dotted(index) or "").rsplit(".", 1)[-1]
    made = rules.assigned_values(rules.enclosing_scope(loop), name) if (
        isinstance(index, ast.Name)) else []  # fmt: skip
    made = [v for v in made if not _reshapes(v, name)] or made  # (keep.expand_as(x))
    made = [v for v in made if not (isinstance(v, ast.Constant) and v.value is None)]  # (None: no mask)
    return bool("mask" in name.lower() or isinstance(index, ast.Compare)
                or (made and all(makes_a_mask(v) for v in made))  # (known = m.bool())
                or used_as_condition(rules.enclosing_scope(loop), name)
                or (isinstance(index, ast.Name) and not made
                    and passed_a_mask(rules, rules.enclosing_scope(loop), name)))  # fmt: skip


def passed_a_mask(rules: Any, scope: ast.AST, name: str) -> bool:
    """``name`` is a parameter of the function ``scope`` and every call of it in the file that
    passes it (at least one; the file's call index) hands it a name made a mask in the
    caller, through reshapes, ``x[None, None]`` and ``torch.from_numpy`` (``m =
    torch.from_numpy(img < 128); keep = m[None, None].expand(1, 4, h, w).to(dev)``).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef sample(x, known, keep, ts):\\n    for t in ts.timesteps:\\n"
        ...        "        x[keep] = known[keep]\\n    return x\\n"
        ...        "def main(x, img, ts):\\n    m = torch.from_numpy(img < 128)\\n"
        ...        "    keep = m[None].expand_as(x)\\n    return sample(x, x, keep=keep, ts=ts)\\n")
        >>> [(f.code, f.line) for f in lint_source(src)]
        [('TD603', 4)]
    """
    args = getattr(scope, "args", None)
    if args is None or not hasattr(scope, "name"):
        return False
    positional = [a.arg for a in (*args.posonlyargs, *args.args)]
    if name not in positional and name not in [a.arg for a in args.kwonlyargs]:
        return False
    found = False
    for site in calls_named(rules, scope.name):  # (the file's call index, not a walk)
        if not isinstance(site.func, ast.Name):
            continue
        given = next((k.value for k in site.keywords if k.arg == name), None)
        if given is None and name in positional and positional.index(name) < len(site.args):
            given = site.args[positional.index(name)]
        if given is None:
            continue  # (the default: no mask passed)
        if not _names_a_mask(rules, rules.enclosing_scope(site), given, 2):
            return False
        found = True
    return found


def _names_a_mask(rules: Any, scope: ast.AST, value: ast.AST, depth: int) -> bool:
    """``value`` is a mask: made by :func:`makes_a_mask`, through reshapes, ``x[None]``
    and ``torch.from_numpy``, or a name ``scope`` binds only to such values."""
    while True:
        if isinstance(value, ast.Call) and (method_name(value) in _KEEPS_VALUES or (
                method_name(value) in {"to", "cuda"} and not value.keywords and not any(
                    _DTYPE.search(dotted(a) or "") for a in value.args))):  # fmt: skip
            value = value.func.value  # type: ignore[attr-defined]
        elif isinstance(value, ast.Subscript) and all(
                isinstance(e, ast.Constant) and e.value in (None, Ellipsis)
                for e in (value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice])):  # fmt: skip
            value = value.value  # (m[None, None]: a view with new axes)
        elif isinstance(value, ast.Call) and len(value.args) == 1 and (
                dotted(value.func) or "").rsplit(".", 1)[-1] in {"from_numpy", "as_tensor"}:  # fmt: skip
            value = value.args[0]
        else:
            break
    if makes_a_mask(value):
        return True
    if not isinstance(value, ast.Name) or depth <= 0:
        return False
    made = [v for v in rules.assigned_values(scope, value.id)
            if not (isinstance(v, ast.Constant) and v.value is None)]  # fmt: skip
    return bool(made) and all(_names_a_mask(rules, scope, v, depth - 1) for v in made)


def used_as_condition(scope: ast.AST, name: str) -> bool:
    """``name`` is the condition of a ``torch.where(name, a, b)`` (``name[..., None]`` too) or
    the mask of a ``masked_fill`` in ``scope``: a boolean tensor.

    Example:
        >>> fn = ast.parse("def f(x, m):\\n    return torch.where(m[..., None], x, 0)").body[0]
        >>> used_as_condition(fn, "m"), used_as_condition(fn, "x")
        (True, False)
    """
    for call in ast.walk(scope):
        if not (isinstance(call, ast.Call) and call.args):
            continue
        last = (dotted(call.func) or "").rsplit(".", 1)[-1]
        if not ((last == "where" and len(call.args) == 3) or last in ("masked_fill", "masked_fill_")):
            continue
        first = call.args[0]
        while isinstance(first, ast.Subscript) or (  # (m[..., None], m.unsqueeze(-1))
                isinstance(first, ast.Call) and method_name(first) in _KEEPS_VALUES):
            first = first.value if isinstance(first, ast.Subscript) else first.func.value  # type: ignore[attr-defined]
        if isinstance(first, ast.Name) and first.id == name:
            return True
    return False

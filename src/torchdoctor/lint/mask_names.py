"""Where a mask a loop names comes from (``m = x == v`` ... ``torch.where(m)``)."""

from __future__ import annotations

import ast
from collections.abc import Callable


def loop_assignment(loop: ast.AST, name: str) -> ast.AST | None:
    """The value of the first ``name = ...`` in ``loop`` (in ``ast.walk`` order), if any.

    Example:
        >>> loop = ast.parse("for v in vs:\\n    m = x == v\\n    y = x[m]\\n").body[0]
        >>> ast.unparse(loop_assignment(loop, "m")), loop_assignment(loop, "y2")
        ('x == v', None)
    """
    for assign in ast.walk(loop):
        if (
            isinstance(assign, ast.Assign)
            and len(assign.targets) == 1
            and isinstance(assign.targets[0], ast.Name)
            and assign.targets[0].id == name
        ):
            return assign.value
    return None


def counted_mask(expr: ast.AST) -> ast.AST:
    """The mask a count sums: ``expr``, or the equality of a weighted count (``(w * (labels ==
    c)).sum(1)``, a kNN monitor's vote per class: one full pass per class as well).

    Example:
        >>> ast.unparse(counted_mask(ast.parse("w * (y == c)", mode="eval").body))
        'y == c'
    """
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        sides = [s for s in (expr.left, expr.right)
                 if isinstance(s, ast.Compare) and len(s.ops) == 1 and isinstance(s.ops[0], ast.Eq)]  # fmt: skip
        if len(sides) == 1:
            return sides[0]
    return expr


def copied_as_array(node: ast.AST, parent_of: Callable[[ast.AST], ast.AST | None]) -> bool:
    """``node`` (``annotations[annotations[:, 4] == label, :4]``) is copied with ``.copy()``,
    NumPy's method (a tensor's is ``.clone()``): the array is NumPy's, on the host (yhenon's
    RetinaNet's csv_eval groups each image's annotations by label so). ``parent_of`` is the
    rule visitor's ``parent``.

    Example:
        >>> tree = ast.parse("y = a[a[:, 4] == k, :4].copy()")
        >>> parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        >>> sub = next(n for n in ast.walk(tree) if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Tuple))
        >>> copied_as_array(sub, lambda n: parents.get(id(n)))
        True
    """
    attribute = parent_of(node)
    call = parent_of(attribute) if isinstance(attribute, ast.Attribute) else None
    return (isinstance(call, ast.Call) and attribute.attr == "copy" and call.func is attribute
            and not call.args and not call.keywords)  # fmt: skip

"""Where a mask a loop names comes from (``m = x == v`` ... ``torch.where(m)``)."""

from __future__ import annotations

import ast


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

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

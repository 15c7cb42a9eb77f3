"""What TD307 (``rules_slice_loop``) reads about where a sliced tensor comes from: a
parameter stacked per layer, a value computed by a module's call."""

from __future__ import annotations

import ast
from typing import Any

from torchdoctor.lint.syntax import MODEL_NAME
from torchdoctor.lint.visitor import dotted


def stacked_parameter(expr: ast.AST, parent_of: Any) -> bool:
    """``self.kernels`` where the enclosing class assigns ``self.kernels = nn.Parameter(...)``
    (a weight per layer stacked in one parameter).

    Example:
        >>> tree = ast.parse("class C:\\n    def __init__(self):\\n        self.w = nn.Parameter(z)\\n"
        ...                  "    def forward(self, i):\\n        return self.w[i]")
        >>> parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        >>> sub = tree.body[0].body[1].body[0].value
        >>> stacked_parameter(sub.value, parents.get)
        True
    """
    if not (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
            and expr.value.id == "self"):  # fmt: skip
        return False
    owner = parent_of(expr)
    while owner is not None and not isinstance(owner, ast.ClassDef):
        owner = parent_of(owner)
    return owner is not None and any(
        isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
        and (dotted(node.value.func) or "").rsplit(".", 1)[-1] == "Parameter"
        and any(isinstance(t, ast.Attribute) and t.attr == expr.attr
                and isinstance(t.value, ast.Name) and t.value.id == "self" for t in node.targets)
        for node in ast.walk(owner)
    )  # fmt: skip


def calls_a_module(expr: ast.AST) -> bool:
    """``expr`` calls a module: ``model(x)``, ``self.cell(h)``, ``net.decode(z)``.

    Example:
        >>> [calls_a_module(ast.parse(c, mode="eval").body) for c in ("v + model(g, v)", "v + dt * a")]
        [True, False]
    """
    return any(
        isinstance(c, ast.Call) and (
            (dotted(c.func) or "").startswith("self.")
            or bool(MODEL_NAME.search((dotted(c.func) or "").split(".", 1)[0])))
        for c in ast.walk(expr)
    )  # fmt: skip

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


def reads_len(expr: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "len"
        for n in ast.walk(expr)
    )


def written_in(loop: ast.AST, name: str) -> bool:
    """The loop writes into ``name`` by index (``out[:, t] = y``): a buffer it fills."""
    for node in ast.walk(loop):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == name
        ):
            return True
    return False


def numpy_attribute(expr: ast.Attribute, rules: Any) -> bool:
    """``self.grid`` where every assignment the enclosing class makes to it is a NumPy call
    (a game board's ``np.zeros``): an array, not a parameter autograd tracks. ``rules`` is the
    asking :class:`~torchdoctor.lint.visitor.RuleVisitor` (it resolves names)."""
    owner = rules.parent(expr)
    while owner is not None and not isinstance(owner, ast.ClassDef):
        owner = rules.parent(owner)
    if owner is None:
        return False
    values = [node.value for node in ast.walk(owner) if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Attribute) and t.attr == expr.attr and isinstance(t.value, ast.Name)
        and t.value.id == "self" for t in node.targets)]  # fmt: skip
    return bool(values) and all(
        isinstance(v, ast.Call) and any(n.startswith("numpy.") for n in rules.callee(v))
        for v in values
    )


def grad_outputs(node: ast.AST, rules: Any) -> bool:
    """``node`` is inside the outputs (first argument) of a ``torch.autograd.grad`` call
    (FFJORD's brute-force divergence, one ``autograd.grad(dx[:, i].sum(), y)`` per
    dimension): each iteration runs its own backward, so no full-size gradients are summed."""
    child, parent = node, rules.parent(node)
    while parent is not None and not isinstance(parent, ast.stmt):
        if isinstance(parent, ast.Call) and "torch.autograd.grad" in rules.callee(parent) and (
                parent.args and child is parent.args[0] or any(
                k.arg == "outputs" and k.value is child for k in parent.keywords)):  # fmt: skip
            return True
        child, parent = parent, rules.parent(parent)
    return False


def unpacked_from_a_module(scope: ast.AST, name: str) -> list[ast.AST]:
    """The calls of a module (``model(x)``, ``self.decoder(z)``) whose returned tuple
    ``scope`` unpacks into ``name`` at any position (``recon, recons, masks, slots =
    model(image)``): activations whatever the name says."""
    return [
        node.value for node in ast.walk(scope)
        if isinstance(node, ast.Assign) and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Tuple) and isinstance(node.value, ast.Call)
        and any(isinstance(e, ast.Name) and e.id == name for e in node.targets[0].elts)
        and calls_a_module(node.value)
    ]  # fmt: skip

"""Which calls make a training step (the rules find training loops by them): ``.backward()``,
and a ``.step()`` that steps an optimizer: its receiver named like one (``optimizer``,
``opt_g``, ``scaler``), handed a closure (``lbfgs.step(closure)``: torch.optim's optimizers
take one, L-BFGS needs it), or built by the file from ``torch.optim`` (``adam =
torch.optim.Adam(...)``; ``self.lbfgs = LBFGS(...)`` in ``__init__``), not a scheduler's or an
environment's ``.step()``.

Example:
    >>> import ast
    >>> [training_kind(ast.parse(s).body[0].value) for s in ("loss.backward()", "opt_d.step()",
    ...  "lbfgs.step(closure)", "env.step(action)", "sched.step()")]
    ['backward', 'step', 'step', None, None]
"""

from __future__ import annotations

import ast
from typing import Any

from torchdoctor.lint.syntax import dotted, method_name, parent

#: torch.optim's classes that are not optimizers (their ``.step()`` steps no parameter)
_NOT_OPTIMIZERS = ("torch.optim.lr_scheduler.", "torch.optim.swa_utils.")


def training_kind(call: ast.Call, rules: Any = None) -> str | None:
    """``"backward"`` or ``"step"`` for a call that makes a training step, else None; with
    ``rules`` (the file's RuleVisitor), a receiver the file builds from torch.optim counts too.

    Example:
        >>> import ast
        >>> training_kind(ast.parse("optimizer.step()").body[0].value)
        'step'
    """
    name = method_name(call)
    if name == "backward":
        return "backward"
    if name != "step":
        return None
    receiver = dotted(call.func.value) or ""  # type: ignore[attr-defined]
    last = receiver.rsplit(".", 1)[-1].lower()
    if ("optim" in last or last in {"opt", "scaler"} or last.endswith(("_opt", "scaler"))
            or (last.startswith("opt_") and len(last) <= 8)):  # (a GAN's opt_g, opt_d)
        return "step"  # (self.grad_scaler.step(self.optimizer): detectron2's AMP)
    closure = [*call.args, *(k.value for k in call.keywords if k.arg == "closure")]
    if len(closure) == 1 and (isinstance(closure[0], ast.Lambda) or "closure" in (
            dotted(closure[0]) or "").rsplit(".", 1)[-1].lower()):  # fmt: skip
        return "step"
    if rules is not None and receiver and any(
        n.startswith("torch.optim.") and not n.startswith(_NOT_OPTIMIZERS)
        for value in _receiver_values(rules, call, receiver) if isinstance(value, ast.Call)
        for n in rules.callee(value)
    ):
        return "step"
    return None


def _receiver_values(rules: Any, call: ast.Call, receiver: str) -> list[ast.expr]:
    """What the file assigns ``receiver`` (``adam`` in the function or at module level;
    ``self.lbfgs`` in any method of the class ``call`` sits in)."""
    if "." not in receiver:
        scope = rules.enclosing_scope(call)
        tree = rules.context.tree
        return [*rules.assigned_values(scope, receiver),
                *(rules.assigned_values(tree, receiver) if tree is not None and tree is not scope else [])]  # fmt: skip
    owner, attr = receiver.split(".", 1)
    if owner != "self" or "." in attr:
        return []
    cls = parent(call)
    while cls is not None and not isinstance(cls, ast.ClassDef):
        cls = parent(cls)
    return [node.value for node in ast.walk(cls) if isinstance(node, ast.Assign)
            and any(dotted(t) == receiver for t in node.targets)] if cls is not None else []  # fmt: skip

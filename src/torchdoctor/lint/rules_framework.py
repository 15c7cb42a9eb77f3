"""TD709: Lightning's ``self.log(..., sync_dist=True)`` at every training step.

With ``sync_dist=True`` Lightning reduces the value across processes when it is logged; in
``training_step`` values are logged on every step by default (``on_step=True``), so each call
is a collective (an all-reduce and a device sync) per step and per metric, on top of DDP's own
gradient all-reduce. Lightning's documentation advises it for epoch-level values: log with
``on_step=False, on_epoch=True`` (one reduction at the epoch's end), or without sync_dist per
step.
"""

from __future__ import annotations

import ast

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.tensors import FRAMEWORK_STEPS
from torchdoctor.lint.visitor import FUNCTIONS, RuleVisitor, constant, dotted, keyword

RULES = (
    Rule(
        "TD709",
        "log-sync-dist-every-step",
        "warning",
        "self.log(..., sync_dist=True) in a LightningModule's training_step: a collective per "
        "metric at every step",
        "reduce per epoch (on_step=False, on_epoch=True), or log the per-step value without "
        "sync_dist (each rank's own)",
        'def training_step(self, batch, i):\n    ...\n    self.log("loss", loss, sync_dist=True)',
        'def training_step(self, batch, i):\n    ...\n    self.log("loss", loss, on_step=False, '
        "on_epoch=True, sync_dist=True)",
    ),
)

_LOG_METHODS = frozenset({"log", "log_dict"})


class FrameworkRules(RuleVisitor):
    """TD709 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("class M:\\n    def training_step(self, batch, i):\\n"
        ...        "        self.log('loss', 1.0, sync_dist=True)\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD709']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"sync_dist",),)

    def visit_Call(self, node: ast.Call) -> None:
        if not (
            isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOG_METHODS
            and dotted(node.func.value) == "self"
        ):
            return
        sync = keyword(node, "sync_dist")
        if sync is None or constant(sync) is not True:
            return
        on_step = keyword(node, "on_step")
        if on_step is not None and constant(on_step, default=True) is False:
            return  # reduced once per epoch
        scope = self.enclosing_scope(node)
        if not (isinstance(scope, FUNCTIONS) and scope.name in FRAMEWORK_STEPS):
            return  # validation_step logs per epoch by default
        self.report(
            node,
            "TD709",
            f"`{self.code_of(node)}` reduces across processes at every training step (Lightning "
            "logs training_step values on_step by default): one collective per metric per "
            "step; log it with on_step=False, on_epoch=True, or drop sync_dist for the "
            "per-step value",
        )

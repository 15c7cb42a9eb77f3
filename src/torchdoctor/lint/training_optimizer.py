"""TD704 and TD706, the optimizer's side of the training loop: an optimizer rebuilt inside
the loop for the same parameters, and gradient accumulation under DistributedDataParallel
whose every micro-batch's backward all-reduces (no ``no_sync()``). A mixin of
:class:`~torchdoctor.lint.rules_training.TrainingRules`, which reports them.

Example:
    >>> from torchdoctor.lint import lint_source
    >>> src = ("import torch\\ndef f(m, loader):\\n    for x in loader:\\n"
    ...        "        o = torch.optim.SGD(m.parameters(), lr=0.1)\\n"
    ...        "        m(x).sum().backward()\\n        o.step()\\n")
    >>> [f.code for f in lint_source(src)]
    ['TD704']
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.visitor import (
    FOR,
    RuleVisitor,
    dotted,
    dotted_names_in,
    method_name,
    target_names,
)

_LOOPS = (*FOR, ast.While)
#: a torch.optim optimizer class (not a scheduler, not SWA's helpers)
OPTIMIZER = re.compile(r"^torch\.optim\.((?!lr_scheduler|swa_utils)\w+\.)?[A-Z]\w*$")
DDP = frozenset(
    {
        "torch.nn.parallel.DistributedDataParallel",
        "torch.nn.parallel.distributed.DistributedDataParallel",
    }
)
_ACCUMULATION = re.compile(r"accum", re.IGNORECASE)


class OptimizerChecks(RuleVisitor):
    """TD704 and TD706 (see the module docstring); the subclass reports them from its calls
    (``_check_optimizer``, ``_check_accumulation``) and provides ``_training_loop`` and
    ``_every_training_step``."""

    # -- TD704 -------------------------------------------------------------------------------
    def _check_optimizer(self, node: ast.Call, name: str) -> None:
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, _LOOPS)]
        if not loops or self._guarded_in(node, loops[-1]):
            return
        loop = loops[-1]  # the outermost: the optimizer must outlive all of them
        assigned = {a.split(".")[0] for lp in loops for a in _rebound(self, lp)}
        params = {n.split(".")[0] for a in node.args[:1] for n in dotted_names_in(a)}
        if not params or params & assigned:
            return  # a new model (or parameter list) every iteration: a new optimizer too
        if not self._trains(loop):
            return
        short = name.rsplit(".", 1)[-1]
        self.report(
            node,
            "TD704",
            f"`{short}(...)` is constructed inside the loop for the same parameters: its state "
            "(momentum, moments, step count) restarts every iteration; build it once before "
            "the loop",
        )

    def _guarded_in(self, node: ast.AST, stop: ast.AST) -> bool:
        """A branch builds the optimizer on some iterations only (a learning-rate drop every
        N epochs), unless the branch also steps it: then every update starts from a new
        optimizer however the branch is gated (a DQN's `if step > learning_starts:` update)."""
        child, parent = node, self.parent(node)
        while parent is not None and parent is not stop:
            if isinstance(parent, (ast.If, ast.IfExp, ast.Try)):
                branch = [b for b in _branches(parent) if any(child is n for n in b)]
                steps = any(
                    optimizer_step_call(c) or method_name(c) == "backward"
                    for part in branch for n in part for c in ast.walk(n)
                    if isinstance(c, ast.Call)
                )  # fmt: skip
                builds = all(
                    any(
                        isinstance(c, ast.Call) and any(map(OPTIMIZER.match, self.callee(c)))
                        for n in part
                        for c in ast.walk(n)
                    )
                    for part in _branches(parent)[:2]
                )  # fmt: skip (if and else both build one: every iteration does)
                if not steps and not (isinstance(parent, (ast.If, ast.IfExp)) and builds):
                    return True
            child, parent = parent, self.parent(parent)
        return False

    def _trains(self, loop: ast.AST) -> bool:
        """The loop, or a loop nested in it, calls backward or an optimizer step."""
        return any(
            isinstance(n, _LOOPS) and self.is_training_body(n) for n in ast.walk(loop)
        ) or any(method_name(c) == "backward" for c in self.direct_calls(loop.body))

    # -- TD706 -------------------------------------------------------------------------------
    def _check_accumulation(self, node: ast.Call) -> None:
        loop = self._training_loop(node)
        if loop is None or not self._every_training_step(node):
            return
        if self._skips_sync(self.enclosing_scope(node)):
            return
        if not any(
            self.callee(c) & DDP for c in ast.walk(self.context.tree) if isinstance(c, ast.Call)
        ) and not any(  # (the model wrapped elsewhere: `ddp_model(x)`, `self.ddp(x)`)
            _DDP_NAME.search((dotted(c.func) or "").rsplit(".", 1)[-1])
            for c in self.direct_calls(loop.body)
        ):
            return
        steps = [
            c
            for c in self.direct_calls(loop.body)
            if method_name(c) == "step"
            and "optim" in (dotted(c.func.value) or "").lower()
            or method_name(c) == "step"
            and (dotted(c.func.value) or "").rsplit(".", 1)[-1] in {"opt", "scaler"}
        ]
        for step in steps:
            parent = self.parent(step)
            while parent is not None and parent is not loop:
                if isinstance(parent, ast.If) and self._accumulation_test(parent.test):
                    self.report(
                        node,
                        "TD706",
                        "gradient accumulation under DistributedDataParallel without no_sync(): "
                        "every micro-batch's backward all-reduces the gradients; run the "
                        "backward of all but the last micro-batch under `with model.no_sync():`",
                    )
                    return
                parent = self.parent(parent)

    def _skips_sync(self, scope: ast.AST) -> bool:
        """The function (the file, at module level) uses ``no_sync()`` or accelerate's
        ``accumulate()``, or calls a function of the file that does (``self._sync_context()``);
        another function's correct no_sync is no excuse for this one."""

        def skips(node: ast.AST) -> bool:
            text = self.context.source if isinstance(node, ast.Module) else self.code_of(node)
            return "no_sync" in text or ".accumulate(" in text

        if skips(scope):
            return True
        helpers = {
            f.name
            for f in ast.walk(self.context.tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and skips(f)
        }
        return any((dotted(c.func) or "").rsplit(".", 1)[-1] in helpers
                   for c in ast.walk(scope) if isinstance(c, ast.Call))  # fmt: skip

    def _accumulation_test(self, test: ast.AST) -> bool:
        return any(
            isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) for n in ast.walk(test)
        ) or any(_ACCUMULATION.search(n) for n in dotted_names_in(test))


#: names of a model wrapped in DistributedDataParallel
_DDP_NAME = re.compile(r"(?i)(^|_)ddp(_|$)")


def optimizer_step_call(call: ast.Call) -> bool:
    """``optimizer.step()`` / ``scaler.step(opt)``.

    Example:
        >>> optimizer_step_call(ast.parse("scaler.step(opt)").body[0].value)
        True
    """
    if method_name(call) != "step":
        return False
    receiver = (dotted(call.func.value) or "").rsplit(".", 1)[-1].lower()
    return "optim" in receiver or receiver in {"opt", "scaler"}


def _branches(node: ast.AST) -> list[list[ast.AST]]:
    """The statement lists (expressions, for ``a if c else b``) a conditional runs one of."""
    if isinstance(node, ast.IfExp):
        return [[node.body], [node.orelse]]
    if isinstance(node, ast.If):
        return [node.body, node.orelse]
    handlers = [h.body for h in getattr(node, "handlers", ())]
    return [node.body, *handlers, node.orelse, node.finalbody]


def _rebound(rules: RuleVisitor, loop: ast.AST) -> set[str]:
    """The names ``loop`` binds or mutates (``assigned_in``), but not a tensor only changed in
    place (``img.clamp_(0, 1)`` keeps the image an optimizer of ``[img]`` trains: style
    transfer's loop that rebuilt its Adam every iteration was not reported).

    Example:
        >>> from torchdoctor.lint.visitor import FileContext
        >>> loop = ast.parse("for s in range(3):\\n    img.clamp_(0, 1)\\n    x = f(x)").body[0]
        >>> sorted(_rebound(RuleVisitor(FileContext("t.py", "")), loop))
        ['s', 'x']
    """
    inplace = {
        dotted(c.func.value)  # type: ignore[attr-defined]
        for c in ast.walk(loop)
        if isinstance(c, ast.Call) and (m := method_name(c)) and m.endswith("_")
        and not m.startswith("_")
    }  # fmt: skip
    bound = set()
    for node in ast.walk(loop):
        if isinstance(node, ast.Assign):
            bound |= {n for t in node.targets for n in target_names(t)}
        elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.NamedExpr):
            bound |= target_names(node.target)
    return rules.assigned_in(loop) - (inplace - bound)


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

from torchdoctor.lint.tensors import steps_by_hand
from torchdoctor.lint.visitor import (
    FOR,
    FUNCTIONS,
    RuleVisitor,
    dotted,
    dotted_names_in,
    method_name,
    target_names,
)

_LOOPS = (*FOR, ast.While)
#: module methods listing the parameters an optimizer takes
_PARAMETER_LISTS = frozenset({"parameters", "named_parameters"})
#: module methods that convert the module in place and return it
_IN_PLACE_CONVERSIONS = frozenset(
    {"to", "cuda", "cpu", "double", "float", "half", "bfloat16", "train", "eval", "type",
     "requires_grad_", "to_empty"}
)  # fmt: skip
#: a torch.optim optimizer class (not a scheduler, not SWA's helpers)
OPTIMIZER = re.compile(r"^torch\.optim\.((?!lr_scheduler|swa_utils)\w+\.)?[A-Z]\w*$")
DDP = frozenset(
    {
        "torch.nn.parallel.DistributedDataParallel",
        "torch.nn.parallel.distributed.DistributedDataParallel",
    }
)
_ACCUMULATION = re.compile(r"accum", re.IGNORECASE)
#: methods that cut a batch into micro-batches
_CHUNKS = frozenset({"chunk", "split", "tensor_split"})


#: calls that read the run's distributed setting, the same in every iteration
_DIST_STATE = re.compile(r"(^|\.)(is_initialized|is_available|is_dist_avail_and_initialized|get_world_size)$")


def _parameter_parts(args: list[ast.AST]) -> list[ast.AST]:
    """The parts of an optimizer's first argument that name its parameters: of parameter
    groups, the ``"params"`` values only (a warm-up's ``{"params": ..., "lr": lr}`` rebuilt with
    a new ``lr`` every iteration keeps the same parameters).

    Example:
        >>> arg = ast.parse("[{'params': net.parameters(), 'lr': lr}, {'params': [z]}]").body[0].value
        >>> [ast.unparse(p) for p in _parameter_parts([arg])]
        ['net.parameters()', '[z]']
    """
    groups = args[0].elts if args and isinstance(args[0], ast.List | ast.Tuple) else args
    if not groups or not all(isinstance(g, ast.Dict) for g in groups):
        return args
    return [v for g in groups for k, v in zip(g.keys, g.values)  # type: ignore[attr-defined]
            if isinstance(k, ast.Constant) and k.value == "params"]  # fmt: skip


class OptimizerChecks(RuleVisitor):
    """TD704 and TD706 (see the module docstring); the subclass reports them from its calls
    (``_check_optimizer``, ``_check_accumulation``) and provides ``_training_loop`` and
    ``_every_training_step``."""

    # -- TD704 -------------------------------------------------------------------------------
    def _check_optimizer(self, node: ast.Call, name: str) -> None:
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, _LOOPS)]
        if not loops:
            return
        given = {n for a in _parameter_parts(node.args[:1]) for n in dotted_names_in(a)}
        modules = {dotted(c.func.value) for a in node.args[:1] for c in ast.walk(a)  # type: ignore[attr-defined]
                   if isinstance(c, ast.Call) and method_name(c) in _PARAMETER_LISTS}  # fmt: skip
        if not given:
            return
        keeping = 0  # the loops, innermost first, in which the parameters stay the same
        for lp in loops:
            changed, called = _rebound(self, lp, modules), _changed_by_calls_only(self, lp)
            if any(n == c if c in called else _related_name(n, c) for n in given for c in changed):
                break  # a new model (or parameter list) every iteration of it: a new optimizer
            keeping += 1  # too (a k-fold loop); the loops inside it still keep the parameters
        if not keeping:
            return
        # the outermost of those that rebuilds it on every iteration and trains with it: the
        # optimizer must outlive it (a branch of the epoch loop that fine-tunes a head for 20
        # iterations rebuilds it 20 times in a row)
        if not any(
            not self._guarded_in(node, loop)
            and (self._trains(loop) or self._handed_to_a_call(node, loop))
            for loop in reversed(loops[:keeping])
        ):
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
            if isinstance(parent, (ast.If, ast.IfExp)) and self._every_iteration_test(
                parent, child, stop
            ):
                pass  # (a run-wide flag, or every iteration after a warm-up)
            elif isinstance(parent, (ast.If, ast.IfExp, ast.Try)):
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

    def _every_iteration_test(self, branch: ast.AST, child: ast.AST, loop: ast.AST) -> bool:
        """The branch of ``branch`` holding ``child`` runs on every iteration of ``loop``, or
        on none: its test is the same in every iteration (``if args.auto_alpha``), or it opens
        after a warm-up (``if t >= args.start_steps:``) for good (a bar the loop never moves)."""
        test = branch.test  # type: ignore[attr-defined]
        if not any(isinstance(n, ast.Call) for n in ast.walk(test)) and self.is_invariant(test, loop):
            return True
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
            return False
        counters = self.loop_targets(loop)
        left = bool(set(dotted_names_in(test.left)) & counters)
        right = bool(set(dotted_names_in(test.comparators[0])) & counters)
        rising = isinstance(test.ops[0], (ast.Gt, ast.GtE)) and left and not right or (
            isinstance(test.ops[0], (ast.Lt, ast.LtE)) and right and not left)  # fmt: skip
        in_body = any(child is n for n in _branches(branch)[0])
        threshold = set(dotted_names_in(test.comparators[0] if left else test.left))
        return rising and in_body and not threshold & self.assigned_in(loop)  # (KGE: bar x3)

    def _handed_to_a_call(self, node: ast.AST, loop: ast.AST) -> bool:
        """The optimizer built at ``node`` is passed to a call in ``loop`` that steps it
        (SAC's ``agent.update(batch, alpha_opt)``), or stepped there (``lbfgs.step(closure)``)."""
        stmt = self.parent(node)
        while stmt is not None and not isinstance(stmt, ast.stmt):
            stmt = self.parent(stmt)
        if not isinstance(stmt, ast.Assign):
            return False
        names = {n for t in stmt.targets for n in target_names(t)}
        return any(
            isinstance(c, ast.Call) and c is not node and (any(
                isinstance(n, ast.Name) and n.id in names
                for a in (*c.args, *(k.value for k in c.keywords)) for n in ast.walk(a))
                or method_name(c) == "step" and dotted(c.func.value) in names)  # type: ignore[attr-defined]
            for c in ast.walk(loop)
        )  # fmt: skip (lbfgs.step(closure): its backward inside the closure)

    def _trains(self, loop: ast.AST) -> bool:
        """The loop, or a loop nested in it, calls backward or an optimizer step."""
        return any(
            isinstance(n, _LOOPS) and self.is_training_body(n) for n in ast.walk(loop)
        ) or any(method_name(c) == "backward" for c in self.direct_calls(loop.body))

    # -- TD706 -------------------------------------------------------------------------------
    def _check_accumulation(self, node: ast.Call) -> None:
        loop = self._training_loop(node)
        if loop is None or not self._every_training_step(node, flags=True):
            return
        if self._skips_sync(self.enclosing_scope(node)):
            return
        if not self._wraps_in_ddp() and not any(  # (the model wrapped elsewhere: `ddp_model(x)`, `self.ddp(x)`)
            _DDP_NAME.search((dotted(c.func) or "").rsplit(".", 1)[-1])
            for c in self.direct_calls(loop.body)
        ) and not self._ddp_elsewhere(loop):  # (... or by the caller, in another file)
            return
        steps: list[ast.AST] = [c for c in self.direct_calls(loop.body) if optimizer_step_call(c)]
        steps += filter(None, [steps_by_hand(loop.body)])  # (for p in params: p.add_(p.grad, ...))
        if not steps and self._micro_batch_loop(loop):  # (for micro in range(accum): ...)
            self.report(
                node,
                "TD706",
                "gradient accumulation under DistributedDataParallel without no_sync(): every "
                "micro-batch's backward in this loop all-reduces the gradients; run all but the "
                "last under `with model.no_sync():` (or set `model.require_backward_grad_sync` "
                "on the last micro-step only, as nanoGPT does)",
            )
            return
        for step in steps:
            parent = self.parent(step)
            while parent is not None and parent is not loop:
                if isinstance(parent, ast.If) and self._accumulation_test(parent.test) or (
                    parent in loop.body and self._skipped_until_accumulated(parent, loop)
                ):
                    self.report(
                        node,
                        "TD706",
                        "gradient accumulation under DistributedDataParallel without no_sync(): "
                        "every micro-batch's backward all-reduces the gradients; run the "
                        "backward of all but the last micro-batch under `with model.no_sync():`",
                    )
                    return
                parent = self.parent(parent)

    def _wraps_in_ddp(self) -> bool:
        """The file calls DistributedDataParallel somewhere (read once per file)."""
        if "_ddp_in_file" not in self.__dict__:
            self._ddp_in_file = any(self.callee(c) & DDP for c in ast.walk(self.context.tree)
                                    if isinstance(c, ast.Call))  # fmt: skip
        return self._ddp_in_file

    def _ddp_elsewhere(self, loop: ast.AST) -> bool:
        """The function around ``loop`` is imported by a file of the project that wraps a model
        in DistributedDataParallel (MAE's engine, called by the main script)."""
        project, scope = self.context.project, self.enclosing_scope(loop)
        return (project is not None and isinstance(scope, FUNCTIONS)
                and project.wrapped_in_ddp_by_caller(scope.name, self.context.path))  # fmt: skip

    def _micro_batch_loop(self, loop: ast.AST) -> bool:
        """``for micro in range(args.accum):`` (any count: ``range(CFG["accum"])``,
        ``range(n_micro)``, ``range(4)``) or over a batch's chunks (``batch.chunk(k)``,
        ``.split(n)``) inside a loop that steps the optimizer after it: the backward runs once
        per micro-batch."""
        counted = loop.iter if isinstance(loop, FOR) else None  # type: ignore[attr-defined]
        if not isinstance(counted, ast.Call) or not (
            dotted(counted.func) == "range" or method_name(counted) in _CHUNKS
            or (isinstance(counted.func, ast.Name) and counted.func.id in ("enumerate", "zip")
                and any(isinstance(a, ast.Call) and method_name(a) in _CHUNKS
                        for a in counted.args))
        ):
            return False  # fmt: skip
        outer = next(iter(self.enclosing_loops(loop)), None)
        return outer is not None and any(
            optimizer_step_call(c) for c in self.direct_calls(outer.body)  # type: ignore[attr-defined]
        )

    def _skips_sync(self, scope: ast.AST) -> bool:
        """The function (the file, at module level) uses ``no_sync()`` or accelerate's
        ``accumulate()``, or calls a function of the file that does (``self._sync_context()``);
        another function's correct no_sync is no excuse for this one."""
        if self._names_sync_skip(scope):
            return True
        if "_sync_helpers" not in self.__dict__:  # (once per file: unparsing every function
            self._sync_helpers = {  # of a big file at each call took 21 s of a 57 s lint)
                f.name for f in ast.walk(self.context.tree)
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                and self._names_sync_skip(f)
            }  # fmt: skip
        return any((dotted(c.func) or "").rsplit(".", 1)[-1] in self._sync_helpers
                   for c in ast.walk(scope) if isinstance(c, ast.Call))  # fmt: skip

    def _names_sync_skip(self, node: ast.AST) -> bool:
        """The source of ``node`` (its lines; the whole file for the module) names no_sync,
        accelerate's accumulate or require_backward_grad_sync."""
        if isinstance(node, ast.Module):
            text = self.context.source
        else:
            lines = self.context.lines
            text = "\n".join(lines[node.lineno - 1:node.end_lineno])  # type: ignore[attr-defined]
        return any(k in text for k in ("no_sync", ".accumulate(", "require_backward_grad_sync"))

    def _run_wide_test(self, branch: ast.AST, loop: ast.AST) -> bool:
        """The test of ``branch`` (``if fp16_scaler is None:``, ``if args.clip:``) reads only
        names the loop never rebinds (calling their methods, ``fp16_scaler.update()``, keeps
        them what they are) and calls nothing: the same branch runs in every iteration."""
        test = getattr(branch, "test", None)
        if test is None or not isinstance(loop, _LOOPS) or any(
            isinstance(n, ast.Call) and not _DIST_STATE.search(dotted(n.func) or "")
            or isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) for n in ast.walk(test)
        ):  # (calls but distributed-state queries, `if dist.is_initialized():`; a modulo is a
            return False  # period: `if args.step % 1000 == 0:`)
        rebound = self.assigned_in(loop) - _changed_by_calls_only(self, loop)
        names = set(dotted_names_in(test))
        return bool(names) and not any(
            _related_name(n, r) or n.split(".")[0] == r for n in names for r in rebound
        )

    def _skipped_until_accumulated(self, stmt: ast.AST, loop: ast.AST) -> bool:
        """``if (it + 1) % accum != 0: continue`` comes before ``stmt`` in the loop's body."""
        body = loop.body  # type: ignore[attr-defined]
        return any(
            isinstance(s, ast.If) and self._accumulation_test(s.test)
            and isinstance(s.body[-1], ast.Continue)
            for s in body[: body.index(stmt)]
        )  # fmt: skip

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
    return "optim" in receiver or receiver.endswith(("opt", "scaler"))


def _branches(node: ast.AST) -> list[list[ast.AST]]:
    """The statement lists (expressions, for ``a if c else b``) a conditional runs one of."""
    if isinstance(node, ast.IfExp):
        return [[node.body], [node.orelse]]
    if isinstance(node, ast.If):
        return [node.body, node.orelse]
    handlers = [h.body for h in getattr(node, "handlers", ())]
    return [node.body, *handlers, node.orelse, node.finalbody]


def _rebound(rules: RuleVisitor, loop: ast.AST, modules: set[str | None] = frozenset()) -> set[str]:
    """The names ``loop`` binds or mutates (``assigned_in``), but not a tensor only changed in
    place (``img.clamp_(0, 1)`` keeps the image an optimizer of ``[img]`` trains: style
    transfer's loop that rebuilt its Adam every iteration was not reported), nor one of the
    ``modules`` whose parameters the optimizer takes converted in place (``model =
    model.double()`` returns the same module).

    Example:
        >>> from torchdoctor.lint.visitor import FileContext
        >>> loop = ast.parse("for s in range(3):\\n    img.clamp_(0, 1)\\n    x = f(x)").body[0]
        >>> sorted(_rebound(RuleVisitor(FileContext("t.py", "")), loop))
        ['s', 'x']
        >>> loop = ast.parse("for s in range(3):\\n    model = model.double()").body[0]
        >>> sorted(_rebound(RuleVisitor(FileContext("t.py", "")), loop, {"model"}))
        ['s']
    """
    inplace = {
        dotted(c.func.value)  # type: ignore[attr-defined]
        for c in ast.walk(loop)
        if isinstance(c, ast.Call) and (m := method_name(c)) and m.endswith("_")
        and not m.startswith("_")
    }  # fmt: skip
    bound, converted = set(), set()
    for node in ast.walk(loop):
        if isinstance(node, ast.Assign):
            names = {n for t in node.targets for n in target_names(t)}
            value = node.value
            if (names & modules and len(names) == 1 and isinstance(value, ast.Call)
                    and method_name(value) in _IN_PLACE_CONVERSIONS
                    and dotted(value.func.value) in names):  # type: ignore[attr-defined]
                converted |= names
                continue
            bound |= names
        elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.NamedExpr):
            bound |= target_names(node.target)
    reloaded = {dotted(c.func.value) for c in ast.walk(loop) if isinstance(c, ast.Call)  # type: ignore[attr-defined]
                and method_name(c) == "load_state_dict"} - {None}  # (weights reset: a new start)
    return (rules.assigned_in(loop) - (inplace - bound) - (converted - bound)) | reloaded


def _changed_by_calls_only(rules: RuleVisitor, loop: ast.AST) -> set[str]:
    """Names ``loop`` changes only by calling their methods (``agent.update(batch)``,
    ``params.append(p)``), never rebinds.

    Example:
        >>> from torchdoctor.lint.visitor import FileContext
        >>> loop = ast.parse("for s in r:\\n    agent.update(s)\\n    x.append(s)\\n    x = []").body[0]
        >>> sorted(_changed_by_calls_only(RuleVisitor(FileContext("t.py", "")), loop))
        ['agent']
    """
    bound = set(rules.loop_targets(loop))
    for node in ast.walk(loop):
        if isinstance(node, ast.Assign):
            bound |= {n for t in node.targets for n in target_names(t)}
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr, *FOR, ast.comprehension)):
            bound |= target_names(node.target)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            bound |= target_names(node.optional_vars)
    return rules.assigned_in(loop) - bound


def _related_name(given: str, changed: str) -> bool:
    """An optimizer of ``given`` (``agent.log_alpha``) is of new parameters when the loop
    rebinds ``changed``, the name itself, an object holding it or a part of it (a method call
    on ``agent``, ``agent.update(...)``, is checked apart: it changes no attribute's binding).

    Example:
        >>> _related_name("agent.log_alpha", "agent"), _related_name("params", "params")
        (True, True)
        >>> _related_name("model", "opt")
        False
    """
    return given == changed or given.startswith(changed + ".") or changed.startswith(given + ".")


"""TD7xx: the training loop and distributed training (PyTorch Performance Tuning Guide).

DataParallel instead of DistributedDataParallel, debugging aids left on, gradients zeroed
instead of freed, optimizers built inside the loop, the CUDA cache emptied every step, DDP
gradient accumulation that all-reduces on every micro-batch, a barrier every step, and a full
garbage collection every step.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.gates import early_returns_before
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import after_warmup, same_file_callee
from torchdoctor.lint.tensors import FRAMEWORK_STEP_HOOKS
from torchdoctor.lint.training_optimizer import (
    _DIST_STATE,
    OPTIMIZER,
    OptimizerChecks,
    optimizer_step_call,
)
from torchdoctor.lint.unwrapped import only_unwrapped
from torchdoctor.lint.visitor import (
    FOR,
    FUNCTIONS,
    constant,
    dotted,
    dotted_names_in,
    keyword,
    method_name,
    replace_call_with,
    segment,
)

_LOOPS = (*FOR, ast.While)
_TRAINS = re.compile(r"\.backward\(|\.fit\(|trainer\.train\(|def training_step\(")
DATA_PARALLEL = frozenset(
    {
        "torch.nn.DataParallel",
        "torch.nn.parallel.DataParallel",
        "torch.nn.parallel.data_parallel.DataParallel",
    }
)
#: debugging aids: qualified name -> (what it is, index of its on/off argument or keyword)
DEBUG_MODES = {
    "torch.autograd.set_detect_anomaly": ("anomaly detection", "mode"),
    "torch.autograd.anomaly_mode.set_detect_anomaly": ("anomaly detection", "mode"),
    "torch.autograd.detect_anomaly": ("anomaly detection", "check_nan"),
    "torch.autograd.anomaly_mode.detect_anomaly": ("anomaly detection", "check_nan"),
    "torch.autograd.profiler.profile": ("the autograd profiler", "enabled"),
    "torch.autograd.profiler.emit_nvtx": ("emit_nvtx", "enabled"),
    "torch.autograd.profiler.emit_itt": ("emit_itt", "enabled"),
}
BARRIER = frozenset({"torch.distributed.barrier"})
EMPTY_CACHE = frozenset({"torch.cuda.empty_cache"})
GC_COLLECT = frozenset({"gc.collect"})
#: calls that must not run every step of a training (or evaluation) loop: code -> message
_NOT_EVERY_STEP = (
    (
        EMPTY_CACHE,
        "TD705",
        "torch.cuda.empty_cache() every step synchronizes and hands cached blocks back to the "
        "driver, only for the allocator to cudaMalloc them again: remove it (fragmentation: "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)",
    ),
    (
        BARRIER,
        "TD707",
        "torch.distributed.barrier() every step makes all ranks wait for the slowest and "
        "stalls the CPU: remove it (the gradient all-reduce already synchronizes); keep "
        "barriers around checkpointing and evaluation",
    ),
    (
        GC_COLLECT,
        "TD710",
        "gc.collect() every step walks every Python object (milliseconds, up to hundreds with "
        "a large heap) while the GPU waits for work: remove it (tensors are freed by reference "
        "counting), or collect every N steps (`if step % 1000 == 0:`)",
    ),
)
_LOADER = re.compile(r"loader|batches")

#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).
RULES = (
    Rule(
        "TD701",
        "data-parallel",
        "warning",
        "torch.nn.DataParallel (one process, model replicated every step, GIL-bound)",
        "use DistributedDataParallel, one process per GPU (torchrun), even on a single machine",
        "model = torch.nn.DataParallel(model)",
        "model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank])",
    ),
    Rule(
        "TD702",
        "debug-mode-left-on",
        "warning",
        "anomaly detection / the autograd profiler / emit_nvtx switched on unconditionally in "
        "training code (Lightning's Trainer(detect_anomaly=True) too)",
        "enable it only behind a debug flag (`if args.debug:`), or remove it once the bug is "
        "found: it slows every step",
        "torch.autograd.set_detect_anomaly(True)\nloss.backward()",
        "torch.autograd.set_detect_anomaly(args.debug)\nloss.backward()",
    ),
    Rule(
        "TD703",
        "zero-grad-set-to-none-false",
        "info",
        "zero_grad(set_to_none=False) writes zeros into every gradient each step",
        "zero_grad() (set_to_none=True, the default) frees them instead; --fix removes the "
        "argument",
        "opt.zero_grad(set_to_none=False)",
        "opt.zero_grad()",
        autofix=True,
    ),
    Rule(
        "TD704",
        "optimizer-in-loop",
        "warning",
        "optimizer constructed inside a loop, for the same parameters: its state (momentum, "
        "Adam moments) restarts every iteration",
        "build the optimizer once, before the loop",
        "for epoch in range(10):\n    opt = torch.optim.Adam(model.parameters())\n"
        "    loss.backward(); opt.step()",
        "opt = torch.optim.Adam(model.parameters())\nfor epoch in range(10):\n"
        "    loss.backward(); opt.step()",
    ),
    Rule(
        "TD705",
        "empty-cache-in-loop",
        "warning",
        "torch.cuda.empty_cache() every training step: synchronizes and makes the caching "
        "allocator call cudaMalloc again (not under an if in the loop: a flag such as "
        "args.low_mem, or every N steps)",
        "remove it (the caching allocator reuses freed blocks); if memory fragments, set "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()\n"
        "    torch.cuda.empty_cache()",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()",
        cuda_only=True,
    ),
    Rule(
        "TD706",
        "ddp-accumulation-without-no-sync",
        "warning",
        "gradient accumulation under DistributedDataParallel without no_sync(): every "
        "micro-batch's backward all-reduces the gradients",
        "run the backward of all but the last micro-batch under `with model.no_sync():`",
        "model = torch.nn.parallel.DistributedDataParallel(model)\nfor i, b in enumerate(loader):"
        "\n    model(b).sum().backward()\n    if (i + 1) % accum == 0:\n        opt.step()",
        "model = torch.nn.parallel.DistributedDataParallel(model)\nfor i, b in enumerate(loader):"
        "\n    with model.no_sync():\n        model(b).sum().backward()\n"
        "    if (i + 1) % accum == 0:\n        opt.step()",
    ),
    Rule(
        "TD707",
        "barrier-every-step",
        "warning",
        "torch.distributed.barrier() every training step: all ranks wait for the slowest one, "
        "and the CPU stalls",
        "remove it (collectives already synchronize the ranks); keep barriers around "
        "checkpoints and evaluation",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()\n"
        "    torch.distributed.barrier()",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()",
    ),
    Rule(
        "TD710",
        "gc-collect-in-loop",
        "warning",
        "gc.collect() every training step: a full collection walks every Python object "
        "(milliseconds to hundreds of milliseconds with a large heap) while the GPU idles",
        "remove it (tensors are freed by reference counting as soon as they are unreachable), "
        "or collect every N steps (`if step % 1000 == 0: gc.collect()`)",
        "import gc\nfor b in loader:\n    model(b).sum().backward()\n    opt.step()\n"
        "    gc.collect()",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()",
    ),
)


class TrainingRules(OptimizerChecks):
    """TD701-TD707, TD710: DataParallel, debug modes, zero_grad(set_to_none=False), optimizer
    in a loop, empty_cache every step, DDP accumulation without no_sync, barrier every step,
    gc.collect() every step.

    Example:
        >>> "TD701" in TrainingRules.CODES
        True
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (
        (r"DataParallel|zero_grad|optim|empty_cache|barrier|\.backward\(|collect\(",),
        (r"anomaly|profiler|emit_nvtx|emit_itt", r"backward\(|\.step\(|\.fit\("),
    )

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        if names & DATA_PARALLEL and not only_unwrapped(self, node):
            self.report(
                node,
                "TD701",
                "torch.nn.DataParallel replicates the model and scatters inputs from one "
                "process every step: use DistributedDataParallel (torchrun, one process per "
                "GPU)",
            )
        for name in names & DEBUG_MODES.keys():
            self._check_debug_mode(node, *DEBUG_MODES[name])
        anomaly = keyword(node, "detect_anomaly")
        if (anomaly is not None and constant(anomaly, None) is True
                and (dotted(node.func) or "").endswith("Trainer")):  # fmt: skip
            self.report(
                anomaly,
                "TD702",
                "Lightning's `Trainer(detect_anomaly=True)` runs every step under anomaly "
                "detection (each backward checks every op's output and keeps the forward's "
                "stack traces): pass it only in a debugging run",
            )
        if method_name(node) == "zero_grad":
            self._check_zero_grad(node)
        if any(OPTIMIZER.match(n) for n in names) and not names & DATA_PARALLEL:
            self._check_optimizer(node, min(n for n in names if OPTIMIZER.match(n)))
        for calls, code, message in _NOT_EVERY_STEP:
            if names & calls and self._every_training_step(  # (a barrier under `if
                    node, over_data=True, flags=code == "TD707"):  # distributed:`: every step)
                self.report(node, code, message)
            elif names & calls and not self.enclosing_loops(node):
                self._check_helper_every_step(node, code, message)
        if method_name(node) == "backward":
            self._check_accumulation(node)
        if names and not any(n.startswith(("torch.", "builtins.")) for n in names):
            self._check_barrier_one_deep(node, names)

    def _check_helper_every_step(self, node: ast.Call, code: str, message: str) -> None:
        """``torch.cuda.empty_cache()`` / ``dist.barrier()`` / ``gc.collect()`` unconditionally
        in a helper of this file (``def release(): ...``, MoCo's ``synchronize()``) that a
        training loop of the file calls on every step. An ``if`` around the call, or one that
        returns before it (3DGS's ``if iteration not in testing_iterations: return``), makes
        it run on some calls only; a barrier's test of the run's distributed state (``if not
        dist.is_initialized(): return``) holds on every step."""
        helper = self.enclosing_scope(node)
        if not isinstance(helper, FUNCTIONS) or self.context.tree is None:
            return
        guards = [*self._branches_around(node, helper), *early_returns_before(node, helper)]
        if any(not (code == "TD707" and _run_wide_in(g.test, helper)) for g in guards):
            return
        for call in ast.walk(self.context.tree):
            if (isinstance(call, ast.Call) and (getattr(call.func, "id", None) == helper.name
                    or getattr(call.func, "attr", None) == helper.name)
                    and same_file_callee(call) is helper
                    and self._every_training_step(call, over_data=True)):  # fmt: skip
                what, _, cure = message.partition(" every step ")
                self.report(
                    node,
                    code,
                    f"{what} in `{helper.name}`, which the loop at line {call.lineno} calls "
                    f"every step: {cure}",
                )
                return

    def _branches_around(self, node: ast.AST, function: ast.AST) -> list[ast.AST]:
        """The ``if`` statements and conditional expressions around ``node`` in ``function``."""
        found, parent = [], self.parent(node)
        while parent is not None and parent is not function:
            if isinstance(parent, (ast.If, ast.IfExp)):
                found.append(parent)
            parent = self.parent(parent)
        return found

    def _check_barrier_one_deep(self, node: ast.Call, names: set[str]) -> None:
        """``synchronize()`` every step, where the project's ``synchronize`` calls
        ``dist.barrier()`` (IRRA's utils/comm.py)."""
        project = self.context.project
        if project is None or not self._every_training_step(node):
            return
        for name in names:
            hit = project.function_calls(name, "barrier")
            if hit is not None:
                short = self.code_of(node.func)
                self.report(
                    node,
                    "TD707",
                    f"`{short}()` calls torch.distributed.barrier() ({hit[0]}:{hit[1]}) every "
                    "training step: all ranks wait for the slowest and the CPU stalls; remove "
                    "it (the gradient all-reduce already synchronizes)",
                )
                return

    # -- helpers -----------------------------------------------------------------------------
    def _guarded(self, node: ast.AST) -> bool:
        """Under an ``if`` (``if args.debug:``, ``if step % 100 == 0:``) or in a conditional
        expression, inside its function."""
        parent = self.parent(node)
        while parent is not None and not isinstance(parent, (*FUNCTIONS, ast.Module)):
            if isinstance(parent, (ast.If, ast.IfExp)):
                return True
            parent = self.parent(parent)
        return False

    def _training_loop(self, node: ast.AST, over_data: bool = False) -> ast.AST | None:
        """The innermost loop around ``node`` if it trains (or, with ``over_data``, iterates
        a data loader: an evaluation loop runs per batch too)."""
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, _LOOPS)]
        if not loops:
            return None
        if self.is_training_body(loops[0]):
            return loops[0]
        if over_data and isinstance(loops[0], FOR):
            names = " ".join(dotted_names_in(loops[0].iter)).lower()
            if _LOADER.search(names):
                return loops[0]
        return None

    def _every_training_step(
        self, node: ast.AST, over_data: bool = False, flags: bool = False
    ) -> bool:
        """``node`` runs on every step of a training loop (or step function); with ``flags``,
        also in a branch on a run-wide setting (``if fp16_scaler is None:``: one branch or
        the other runs every step)."""
        loop = self._training_loop(node, over_data)
        if loop is None:  # a method the framework calls every step (on_train_batch_end), or
            scope = self.enclosing_scope(node)  # a step function (detectron2's run_step)
            if self.enclosing_loops(node) or not (
                (isinstance(scope, FUNCTIONS) and scope.name in FRAMEWORK_STEP_HOOKS
                 and isinstance(self.parent(scope), ast.ClassDef))
                or self.is_step_function(scope)
            ):  # fmt: skip
                return False
            loop = scope
        parent = self.parent(node)
        while parent is not None and parent is not loop:
            if isinstance(parent, (ast.If, ast.IfExp, ast.Try)) and not (
                    _always_on_a_gpu(parent) or after_warmup(getattr(parent, "test", None))
                    or flags and self._run_wide_test(parent, loop)
                    or self._trains_in_branch(parent, node)):
                return False  # fmt: skip
            parent = self.parent(parent)
        return True

    def _trains_in_branch(self, branch: ast.AST, node: ast.AST) -> bool:
        """The branch of ``branch`` holding ``node`` is where the loop trains (``if step %
        train_every == 0: agent.learn(batch); ...``): it runs on every training step."""
        if not isinstance(branch, ast.If):
            return False
        part = branch.body if any(n is node for s in branch.body for n in ast.walk(s)) else (
            branch.orelse)  # fmt: skip
        return self.is_training_body(part) if part else False

    # -- TD702 -------------------------------------------------------------------------------
    def _check_debug_mode(self, node: ast.Call, what: str, switch: str) -> None:
        flag = node.args[0] if node.args else None
        for kw in node.keywords:
            if kw.arg == switch or kw.arg == "enabled":
                flag = kw.value
        if flag is not None and constant(flag, None) is not True:
            return  # off, or decided by a variable (a debug flag)
        if what == "anomaly detection" and switch == "mode" and flag is None:
            return
        if self._guarded(node):
            return
        if switch != "mode" and not self._wraps_training(node):
            return  # a profiler built as a value, or around code that does not train
        if switch == "mode" and not _TRAINS.search(self.context.source):
            return  # (a script that trains: a backward, or a framework's fit / train)
        scope = self.enclosing_scope(node)
        if isinstance(scope, FUNCTIONS) and re.search(r"debug|test|check", scope.name, re.I):
            return
        self.report(
            node,
            "TD702",
            f"{what} is switched on unconditionally in training code and slows every step: "
            "enable it behind a debug flag (`if args.debug:`), or remove it",
        )

    def _wraps_training(self, node: ast.Call) -> bool:
        """``with detect_anomaly():`` / ``with profile():`` around a backward pass or an
        optimizer step (in its body, or inside a training loop)."""
        item = self.parent(node)
        with_node = self.parent(item)
        if not (isinstance(item, ast.withitem) and isinstance(with_node, ast.With)):
            return False
        if self._training_loop(with_node) is not None:
            return True
        calls = [c for stmt in with_node.body for c in ast.walk(stmt) if isinstance(c, ast.Call)]
        if any(method_name(c) == "backward" or optimizer_step_call(c) for c in calls):
            return True
        return any(  # (`d_hist = train(args, G, D, ...)`: a function of the file that trains)
            isinstance(n, (*FOR, ast.While)) and self.is_training_body(n)
            for c in calls if (f := same_file_callee(c)) is not None for n in ast.walk(f)
        )

    # -- TD703 -------------------------------------------------------------------------------
    def _check_zero_grad(self, node: ast.Call) -> None:
        flag = node.args[0] if node.args else None
        for kw in node.keywords:
            if kw.arg == "set_to_none":
                flag = kw.value
        if not (isinstance(flag, ast.Constant) and flag.value is False):
            return
        func = segment(self.context.lines, node.func)
        source = segment(self.context.lines, node) or ""
        safe = func is not None and "#" not in source and len(node.args) + len(node.keywords) == 1
        self.report(
            node,
            "TD703",
            "zero_grad(set_to_none=False) writes zeros into every gradient each step: "
            "zero_grad() frees them instead (less memory traffic; the next backward allocates)",
            fix=replace_call_with(f"{func}()") if safe else None,  # (its arguments dropped)
        )


def _always_on_a_gpu(branch: ast.AST) -> bool:
    """``if torch.cuda.is_available():``: true on every step of a GPU run, no condition on
    the step.

    Example:
        >>> _always_on_a_gpu(ast.parse("if torch.cuda.is_available():\\n    pass").body[0])
        True
    """
    return isinstance(branch, ast.If) and dotted(getattr(branch.test, "func", None)) in {
        "torch.cuda.is_available", "cuda.is_available"}  # fmt: skip


def _run_wide_in(test: ast.AST, function: ast.AST) -> bool:
    """``test`` asks about the run, not the call: it calls nothing but distributed-state
    queries (``dist.is_initialized()``, ``get_world_size() == 1``), takes no modulo and reads
    no parameter of ``function`` as a bare name (``args.distributed`` is a setting; an
    ``iteration`` passed in changes every call).

    Example:
        >>> fn = ast.parse("def sync(it, args):\\n    pass").body[0]
        >>> [_run_wide_in(ast.parse(t, mode="eval").body, fn) for t in (
        ...     "not dist.is_initialized() or dist.get_world_size() == 1",
        ...     "args.distributed", "it not in its", "it % 10 == 0", "check(args)")]
        [True, True, False, False, False]
    """
    args = getattr(function, "args", None)
    params = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)} if args else set()
    owners = {id(n.value) for n in ast.walk(test) if isinstance(n, ast.Attribute)}
    return not any(
        isinstance(n, ast.Call) and not _DIST_STATE.search(dotted(n.func) or "")
        or isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
        or isinstance(n, ast.Name) and n.id in params and id(n) not in owners
        for n in ast.walk(test)
    )  # fmt: skip

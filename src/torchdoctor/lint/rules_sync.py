"""TD2xx: host-device synchronizations in training steps (seed 002)."""

from __future__ import annotations

import ast

from torchdoctor.lint.loop_shapes import feeds_an_environment
from torchdoctor.lint.per_step import PerStepCalls
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.rules_precision import is_model_like
from torchdoctor.lint.rules_sync_forward import ForwardAndCallSyncs
from torchdoctor.lint.rules_sync_solver import RULES as SOLVER_RULES
from torchdoctor.lint.rules_sync_solver import ConvergenceSyncs
from torchdoctor.lint.side_branches import skipped_branch
from torchdoctor.lint.syntax import after_warmup, every_step_of, root_name
from torchdoctor.lint.tensor_values import TensorValues, copied_to_host_first
from torchdoctor.lint.visitor import (
    FOR,
    FUNCTIONS,
    HOST_COPY_METHODS,
    RuleVisitor,
    dotted,
    method_name,
)

_LOOP_STATEMENTS = (*FOR, ast.While)
from torchdoctor.lint.tensors import (  # noqa: E402
    FRAMEWORK_STEPS,
    MODULE_METHODS,
    NOT_TENSOR_SUFFIX,
    NOT_TENSORS,
    SCALAR_CASTS,
    TENSOR_FACTORIES,
    TENSOR_NAME,
    TORCH_TENSOR_FUNCTION,
    TRUTH_METHODS,
)

#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).
RULES = (
    Rule(
        "TD201",
        "host-sync-in-training-loop",
        "warning",
        "host-device sync (.item()/.cpu()/.numpy()/.tolist()/float()/print of a tensor) in a "
        "training step",
        "keep metrics as device tensors and convert them only when they are displayed",
        "for x, y in loader:\n    loss.backward(); opt.step()\n    total += loss.item()",
        "metrics.update(loss=loss.detach())  # LazyMetrics; .compute() at log time",
        "torchdoctor.train.LazyMetrics",
        seed="002",
    ),
    Rule(
        "TD202",
        "cuda-synchronize-in-training-loop",
        "warning",
        "torch.cuda.synchronize() in a training loop stalls the CPU every step (not under an "
        "if in the loop: a timing flag such as args.profile, or every N steps)",
        "remove it, or time with CUDA events resolved once per step (torchdoctor.profile)",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()\n    torch.cuda.synchronize()",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()",
        "torchdoctor.profile",
    ),
    Rule(
        "TD203",
        "tensor-rebuilt-from-host-data",
        "warning",
        "torch.tensor(python_list, device=...) rebuilt every iteration from tensor data",
        "index, stack or remap the device tensor directly instead of round-tripping through "
        "Python lists",
        "for b in loader:\n    ids = torch.tensor(b.tolist(), device=dev)",
        "for b in loader:\n    ids = b.to(dev, non_blocking=True)",
        seed="002",
        explains=("TD201",),
    ),
    Rule(
        "TD205",
        "sync-in-forward",
        "warning",
        "host read (.item()/.cpu()/.tolist()/truth value of a tensor) inside a module's "
        "forward, or in a module-level function a forward calls (found through the caller's "
        "imports: DETR's generalized_box_iou asserts on box tensors in its matcher), or in a "
        "method of an object the forward builds (a mixture of experts' SparseDispatcher): a sync on "
        "every call and a torch.compile graph break. Not reported in a forward decorated "
        "@torch.no_grad() / @torch.inference_mode() (an inference-only module, such as a "
        "matcher or post-processor, hands its outputs to Python by design), nor in classes "
        "named for post-processing, evaluation or metrics",
        "keep the value a tensor (torch.clamp(n, min=1) instead of max(n.item(), 1)), or move "
        "the read out of forward",
        "class Criterion(torch.nn.Module):\n    def forward(self, x, n):\n"
        "        return x.sum() / max(n.item(), 1)",
        "class Criterion(torch.nn.Module):\n    def forward(self, x, n):\n"
        "        return x.sum() / torch.clamp(n, min=1)",
    ),
)


def _sliced_in_dims(expr: ast.AST) -> bool:
    """``boxes[:, 2:]`` / ``x[..., 0]``: slicing in several dimensions, a tensor's (or an
    array's) syntax; a list would raise.

    Example:
        >>> [_sliced_in_dims(ast.parse(c, mode="eval").body) for c in ("b[:, 2:]", "b[2:]", "b[0]")]
        [True, False, False]
    """
    if not isinstance(expr, ast.Subscript) or not isinstance(expr.slice, ast.Tuple):
        return False
    return any(
        isinstance(e, ast.Slice) or (isinstance(e, ast.Constant) and e.value is Ellipsis)
        for e in expr.slice.elts
    )


class SyncRules(ForwardAndCallSyncs, ConvergenceSyncs, TensorValues, PerStepCalls, RuleVisitor):
    """TD201 host sync in a training step; TD202 cuda.synchronize in a training loop; TD203
    tensor rebuilt from host data every iteration; TD205 sync in forward; TD206 a solver's
    convergence test read on the host every iteration.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> [f.code for f in lint_source("for x in loader:\\n    model(x).sum().backward()\\n    total += loss.item()\\n")]
        ['TD201']
    """

    RULES = (*RULES, *SOLVER_RULES)
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (
        (r"\.backward\(|\.step\(|def training_step\(|def compute_loss\(",),
        (r"(?i)tol|eps|thr|allclose|isclose|\de-\d", r"\bwhile\b|\bbreak\b"),
        (r"def forward\(", r"item\(|cpu\(|numpy\(|tolist\(|float\(|int\(|if |assert |print"),
        (r"tensor\(|as_tensor|Tensor\(", r"tolist|item\(|cpu\(|numpy\("),
        (r"\bassert\b[^\n]*\.(?:all|any)\(\)",),  # (a helper some forward calls: DETR's box_ops)
        (r"(?m)^def \w+\(", r"\.(?:tolist|item|cpu)\(\)"),  # (... ColBERT's punctuation mask)
    )

    def _moves_a_module(self, call: ast.Call) -> bool:
        """``model.cpu()`` / ``m.cpu().parameters()``: a module is moved, no tensor is read."""
        if is_model_like(call.func.value):
            return True
        parent = self.parent(call)
        return isinstance(parent, ast.Attribute) and parent.attr in MODULE_METHODS

    def _training_context(self, node: ast.AST) -> ast.AST | None:
        """The training loop (or step function) evaluating ``node`` every step, if any."""
        loops = self.enclosing_loops(node)
        loops = [lp for lp in loops if isinstance(lp, _LOOP_STATEMENTS)]
        if loops:
            # The innermost training loop: a small loop inside a step (``for k, v in
            # out.items(): logs[k] = v.item()``) runs every step too.
            return next((lp for lp in loops if self.is_training_body(lp)), None)
        scope = self.enclosing_scope(node)
        # A function without a loop counts as a training step only when it calls both
        # .backward() and an optimizer step (gradient checks and tests call backward alone), or
        # is a Lightning-style ``training_step`` method (the framework runs backward and step).
        if isinstance(scope, FUNCTIONS) and (
            self.is_training_body(scope, full=True) or scope.name in FRAMEWORK_STEPS
            or self._trainer_loss(scope)
        ):
            return scope
        return None

    def _trainer_loss(self, function: ast.AST) -> bool:
        """``compute_loss`` of a Hugging Face ``Trainer`` subclass: the Trainer calls it at
        every training step (and runs backward and step around it)."""
        owner = self.parent(function)
        return (function.name == "compute_loss" and isinstance(owner, ast.ClassDef)  # type: ignore[attr-defined]
                and any((dotted(b) or "").endswith("Trainer") for b in owner.bases))  # fmt: skip

    def _report_sync(self, node: ast.AST, what: str, fix: str | None = None) -> None:
        if self.under_tensor_test(node):
            return  # (the `if` test is the read every step: reported there)
        context = self._training_context(node)
        if context is None:
            self._report_in_forward(node, what)
            return
        if self.under_log_gate(node, context) or self.skip_sync(node, context):
            return
        if isinstance(context, _LOOP_STATEMENTS) and feeds_an_environment(node, context):
            return  # (an action for env.step: the environment needs it on the host)
        branch = fix is None and self._decides_a_branch(node, context)
        fix = _BRANCH_FIX if branch else fix or (
            "keep metrics as device tensors (e.g. torchdoctor.train.LazyMetrics) and convert "
            "them at log time")  # fmt: skip
        project = self.context.project
        if self.context.uses_cuda or (project is not None and project.uses_cuda):
            what = f"{what} forces a host-device sync {every_step_of(context)}"
        else:  # (a CPU-only project: the read costs little here, a sync once on a GPU)
            what = (f"{what} reads a tensor on the host {every_step_of(context)}, a host-device "
                    "sync on a GPU run (this code moves nothing to CUDA: on the CPU it is cheap)")
        self.report(node, "TD201", f"{what}: {fix}", cure=not branch)

    def _decides_a_branch(self, node: ast.AST, context: ast.AST) -> bool:
        """``if top1.item() > 0.99:``, ``if not math.isfinite(float(gnorm)):``: the read is
        the test of an if/while (control flow, not a metric)."""
        child, parent = node, self.parent(node)
        while parent is not None and parent is not context and not isinstance(parent, ast.stmt):
            child, parent = parent, self.parent(parent)
        return isinstance(parent, (ast.If, ast.While)) and child is parent.test

    def skip_sync(self, node: ast.AST, context: ast.AST) -> bool:
        """Not every step: ``node`` sits in a branch that ends the run (``if not
        math.isfinite(loss_value): print(...); sys.exit(1)``), so it runs at most once."""
        return skipped_branch(self, node, context)  # (also a branch for another device: mps)

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        name = method_name(node)
        if (
            name in HOST_COPY_METHODS
            and not node.args
            and not node.keywords
            and not (names & {"torch.cpu"})
        ):
            if name == "numpy" and not copied_to_host_first(node.func.value):  # type: ignore[attr-defined]
                pass  # (Tensor.numpy() raises on a CUDA tensor: this one is on the host)
            elif not self._moves_a_module(node) and not self.host_data_read(node):
                self._report_sync(node, f"`.{name}()`")
        elif names & (SCALAR_CASTS.keys() | _MATH_READS) and len(node.args) == 1 and not node.keywords:
            arg = node.args[0]
            inner = method_name(arg) if isinstance(arg, ast.Call) else None
            if inner not in HOST_COPY_METHODS and self.looks_like_tensor(arg) and not self.host_made(arg):
                self._report_sync(node, f"`{self.code_of(node)}`")
        elif names & _NUMPY_CONVERSIONS and node.args:
            arg = node.args[0]
            inner = method_name(arg) if isinstance(arg, ast.Call) else None
            if inner not in HOST_COPY_METHODS and self.looks_like_tensor(arg) and not (
                    self.read_before_rebinding(node)):  # (x = torch.tensor(np.array(x)))
                self._report_sync(node, f"`{self.code_of(node)}` (a .cpu().numpy() copy)")
        elif (
            name == "format"
            and isinstance(node.func.value, ast.Constant)
            and isinstance(node.func.value.value, str)
            and any(
                self.looks_like_tensor(a) for a in [*node.args, *(k.value for k in node.keywords)]
            )
        ):
            self._report_sync(node, f"formatting a tensor with `{self.code_of(node)}`")
        elif name in _LOGGER_READS and self.logs_a_tensor(node):
            self._report_sync(
                node,
                f"`{self.code_of(node)}` (the logger reads the tensor with .item())",
                "log every N steps, or pass a number read at log time (keep the running value "
                "as a device tensor, e.g. torchdoctor.train.LazyMetrics)",
            )
        elif "builtins.print" in names:
            if any(self.looks_like_tensor(a) for a in node.args):
                self._report_sync(node, "printing a tensor")
        if names & {"torch.cuda.synchronize"}:
            context = self._synchronize_context(node)
            if context is not None and not self._conditional(node, context):
                self.report(node, "TD202")
        if names & TENSOR_FACTORIES:
            self._check_rebuilt_tensor(node)
        if name not in HOST_COPY_METHODS and name is not None and not names:
            self._check_call_one_deep(node)
        elif isinstance(node.func, ast.Name):
            self._check_function_one_deep(node)

    def _synchronize_context(self, node: ast.AST) -> ast.AST | None:
        """The training loop around ``node``, or the step function it sits in (``train_step``
        calling backward and an optimizer step; Lightning's ``training_step``, every step)."""
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, _LOOP_STATEMENTS)]
        if loops:
            return loops[0] if self.is_training_body(loops[0]) else None
        scope = self.enclosing_scope(node)
        framework = getattr(scope, "name", None) in FRAMEWORK_STEPS
        return scope if framework or self.is_step_function(scope) else None

    def _conditional(self, node: ast.AST, loop: ast.AST) -> bool:
        """``node`` runs only under an ``if`` inside ``loop`` (``if args.profile:``,
        ``if step % 100 == 0:``): not every step."""
        parent = self.parent(node)
        while parent is not None and parent is not loop:
            if isinstance(parent, (ast.If, ast.IfExp)) and not after_warmup(parent.test):
                return True  # (`if step > warmup:` holds on every step after the warm-up)
            parent = self.parent(parent)
        return False

    # -- `if torch.isnan(loss):` / `while not done.all():` / `assert torch.isfinite(x).all()`
    def _is_tensor_truth_test(self, expr: ast.AST) -> bool:
        """The test of an if/while/assert is a tensor (its truth value is a host read): a
        torch function call, or a predicate/reduction method on a torch call or a tensor-named
        variable (``loss.isnan().any()``). Comparisons and plain names are left alone: they are
        as often Python numbers."""
        while isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
            expr = expr.operand
        if isinstance(expr, ast.BoolOp):
            return any(self._is_tensor_truth_test(v) for v in expr.values)
        if isinstance(expr, ast.Compare):  # `if loss < best:` with loss.backward() nearby
            if all(isinstance(op, (ast.Is, ast.IsNot)) for op in expr.ops):
                return False  # `if loss is not None:` is identity, a Python bool (SAC's)
            return self._compares_a_backward_tensor(expr) or any(  # (or a buffer's)
                self._reduces_a_forward_input(o) or self.registered_buffer(o) or self.torch_result(o)
                for o in [expr.left, *expr.comparators])  # fmt: skip
        if not isinstance(expr, ast.Call):  # (`if self.inited:`, a registered buffer's truth)
            return self.registered_buffer(expr)
        if any(TORCH_TENSOR_FUNCTION.match(n) and n not in NOT_TENSORS for n in self.callee(expr)):
            return True
        if method_name(expr) not in TRUTH_METHODS:
            return False
        receiver = expr.func.value
        while isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute):
            if any(TORCH_TENSOR_FUNCTION.match(n) for n in self.callee(receiver)):
                return True
            receiver = receiver.func.value
        if isinstance(receiver, ast.Call):
            return any(
                TORCH_TENSOR_FUNCTION.match(n) and n not in NOT_TENSORS
                for n in self.callee(receiver)
            )
        if isinstance(receiver, ast.Compare):  # `(loss > 10).any()`: a bool tensor
            operands = [receiver.left, *receiver.comparators]
            inputs = self._forward_tensors(expr)  # (`(edge_index >= n).any()` in forward)
            return any(self.looks_like_tensor(o) or _sliced_in_dims(o)
                       or (isinstance(o, ast.Name | ast.Subscript) and root_name(o) in inputs)
                       for o in operands) or self._reduces_a_forward_input(expr)  # fmt: skip
        if isinstance(receiver, ast.Name | ast.Subscript) and root_name(receiver) in self._forward_tensors(expr):
            return True  # `if mask.any():`, `mask[0].all()` on forward's tensor (pytorch-crf)
        if isinstance(receiver, ast.Name):  # (also `norm = clip_grad_norm_(...)`: a tensor)
            return self.looks_like_tensor(receiver)
        last = (dotted(receiver) or "").rsplit(".", 1)[-1]
        return bool(TENSOR_NAME.search(last)) and not NOT_TENSOR_SUFFIX.search(last)

    def _compares_a_backward_tensor(self, comparison: ast.Compare) -> bool:
        """A compared name is one the same training loop/step calls ``.backward()`` on: a
        tensor for sure (a bare comparison of other names is as often of Python numbers)."""
        context = self._training_context(comparison)
        if context is None:
            return False
        body = context.body if isinstance(context, (*_LOOP_STATEMENTS, *FUNCTIONS)) else context
        backwarded = {
            dotted(call.func.value)
            for call in self.direct_calls(body)
            if method_name(call) == "backward"
        }
        operands = [comparison.left, *comparison.comparators]
        return any(dotted(o) in backwarded for o in operands if dotted(o))

    def _check_truth_test(self, test: ast.AST) -> None:
        if self._is_tensor_truth_test(test):
            self._report_sync(
                test,
                f"the truth value of tensor `{self.code_of(test)}`",
                "test it every N steps (under the logging condition), or keep a device flag "
                "(`bad |= torch.isnan(loss)`) and read it at log time",
            )

    def visit_If(self, node: ast.If) -> None:
        self._check_truth_test(node.test)

    visit_Assert = visit_IfExp = visit_If  # (`a if mask.any() else b` reads it too)

    def visit_While(self, node: ast.While) -> None:
        self._check_truth_test(node.test)
        self._check_convergence(node)

    def visit_For(self, node: ast.For) -> None:
        self._check_convergence(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        """``"%.4f" % loss``: %-formatting a tensor reads it."""
        if (
            isinstance(node.op, ast.Mod)
            and isinstance(node.left, ast.Constant)
            and isinstance(node.left.value, str)
        ):
            values = node.right.elts if isinstance(node.right, ast.Tuple) else None
            operands = values if values is not None else [node.right]
            if any(self.looks_like_tensor(v) for v in operands):
                self._report_sync(node, f"formatting a tensor with `{self.code_of(node)}`")

    def visit_FormattedValue(self, node: ast.FormattedValue) -> None:
        if self._in_assert_message(node):
            return  # (formatted only when the assert fails)
        expr = node.value
        if isinstance(expr, ast.Call) and method_name(expr) in HOST_COPY_METHODS:
            return  # reported as the call itself
        if self.looks_like_tensor(expr):
            self._report_sync(node, f"formatting tensor `{self.code_of(expr)}` in an f-string")

    def _in_assert_message(self, node: ast.AST) -> bool:
        child, parent = node, self.parent(node)
        while parent is not None and not isinstance(parent, ast.stmt):
            child, parent = parent, self.parent(parent)
        return isinstance(parent, ast.Assert) and child is parent.msg

    def _check_rebuilt_tensor(self, call: ast.Call) -> None:
        if not call.args or isinstance(call.args[0], ast.Starred):
            return
        on_device = any(kw.arg == "device" for kw in call.keywords)
        node, parent = call, self.parent(call)
        while isinstance(parent, ast.Attribute) and parent.value is node:  # .long().cuda()
            if parent.attr in {"to", "cuda"}:
                on_device = True
                break
            grand = self.parent(parent)
            if not isinstance(grand, ast.Call):
                break
            node, parent = grand, self.parent(grand)
        if not on_device:
            return
        loops = [lp for lp in self.enclosing_loops(call) if isinstance(lp, _LOOP_STATEMENTS)]
        scope = self.enclosing_scope(call)
        where = "every iteration"
        if not loops:  # (a loss helper a Trainer's compute_loss calls: every step too)
            context = self._training_context(call)
            per_call = None if context is not None else (
                self.per_step_call(scope) if isinstance(scope, FUNCTIONS) else None
            )
            if context is None and per_call is None:
                return
            where = per_call or "every training step"
        data = call.args[0]
        if any(f(data, scope) for f in (self.has_host_copy_resolved, self.unpacked_from_host,
                                        self.iterated_from_host, self.cast_from_tensors)):  # fmt: skip
            self.report(
                call,
                "TD203",
                f"`{self.code_of(call.func)}(...)` is rebuilt on the device {where} "
                "from tensor data copied to Python: index, stack or remap the device tensor "
                "directly (labels: torch.unique(..., return_inverse=True))",
            )


#: logger methods that read a tensor value on the host: TensorBoard's SummaryWriter
_LOGGER_READS = frozenset({"add_scalar", "add_scalars", "add_histogram"})
#: NumPy reading a tensor: np.array(t) is t.cpu().numpy()
_NUMPY_CONVERSIONS = frozenset({"numpy.array", "numpy.asarray", "numpy.float32", "numpy.float64"})
#: math functions of a float: given a tensor, they read it (Tacotron 2's math.isnan(grad_norm))
_MATH_READS = frozenset(f"math.{f}" for f in ("isnan", "isinf", "isfinite", "sqrt", "log", "exp"))


#: the fix of a host read that decides a branch
_BRANCH_FIX = (
    "the branch waits for the value: test it every N steps, or keep the decision on the device "
    "(torch.where / a mask instead of the branch); for a non-finite check, GradScaler skips "
    "such steps by itself and clip_grad_norm_(..., error_if_nonfinite=True) raises"
)

"""TD204 tensors created on the host and copied to the device every step; TD505 float64 in a
CUDA training step (PyTorch Performance Tuning Guide: "create tensors directly on the target
device", "avoid float64 on GPUs")."""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.host_built import HostBuiltMoves
from torchdoctor.lint.per_step import PerStepCalls
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import target_names
from torchdoctor.lint.tensors import framework_step_method
from torchdoctor.lint.visitor import (
    FOR,
    FUNCTIONS,
    RuleVisitor,
    dotted,
    replace_call_with,
    segment,
    with_keyword,
)

_LOOPS = (*FOR, ast.While)
#: expressions a host tensor passes through on its way to a move (a list torch.cat joins)
def _walks_data(loop: ast.AST) -> bool:
    """``loop`` walks batches (``for x in loader``, a dataset), not a loss's own terms (``for p,
    i in zip(router_probs, router_idx)``: one per layer, within the step that calls it).

    Example:
        >>> _walks_data(ast.parse("for x in val_loader: pass").body[0])
        True
        >>> _walks_data(ast.parse("for p in zip(probs, idx): pass").body[0])
        False
    """
    header = loop.iter if isinstance(loop, FOR) else getattr(loop, "test", loop)
    return isinstance(loop, ast.While) or bool(_DATA.search(ast.unparse(header)))


_DATA = re.compile(r"loader|batches|dataset|data\b", re.IGNORECASE)
_COMPOSED = (ast.Compare, ast.BinOp, ast.UnaryOp, ast.List, ast.Tuple)
#: methods that reshape or repeat a host tensor on its way to the device
_RESHAPES = frozenset({"repeat", "view", "reshape", "expand", "unsqueeze", "squeeze", "t",
                       "flatten", "permute", "transpose", "contiguous", "repeat_interleave"})
FACTORIES = frozenset(
    f"torch.{n}"
    for n in (
        "randn",
        "rand",
        "randint",
        "randperm",
        "zeros",
        "ones",
        "full",
        "empty",
        "arange",
        "linspace",
        "logspace",
        "eye",
        "normal",
        "hann_window",  # (an STFT's window, made on the host at every step)
        "hamming_window",
        "blackman_window",
        "bartlett_window",
        "kaiser_window",
    )
)
FLOAT64 = frozenset({"torch.float64", "torch.double"})
DTYPES = frozenset(
    f"torch.{n}"
    for n in (
        "float16 float32 float64 bfloat16 half float double int8 int16 int32 int64 long int "
        "short uint8 bool complex64 complex128 cfloat cdouble"
    ).split()
)

#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).
RULES = (
    Rule(
        "TD204",
        "host-tensor-moved-to-device",
        "warning",
        "tensor created on the host and copied to the device every step "
        "(torch.randn(...).cuda(), torch.zeros(...).to(device))",
        "create it on the device: torch.randn(..., device=device); --fix moves the device into "
        "the factory call",
        "for b in loader:\n    noise = torch.randn(4, 8).cuda()",
        "for b in loader:\n    noise = torch.randn(4, 8, device='cuda')",
        autofix=True,
    ),
    Rule(
        "TD505",
        "float64-in-cuda-training",
        "warning",
        "float64 (.double(), dtype=torch.float64) in a CUDA training step, or in a module-level "
        "function (a loss) such a training loop calls, or in a method of a plain object (not a "
        "module) it calls every step (an environment's reward): consumer and most data-center "
        "GPUs run fp64 at 1/32 to 1/64 of fp32 speed",
        "keep float32 (or autocast to bfloat16); use float64 only where a measured accuracy "
        "problem needs it, outside the step",
        "for b in loader:\n    x = b.cuda().double()\n    model(x).sum().backward()\n"
        "    opt.step()",
        "for b in loader:\n    x = b.cuda()\n    model(x).sum().backward()\n    opt.step()",
    ),
)


class DeviceMoves:
    """Mixin for a :class:`~torchdoctor.lint.visitor.RuleVisitor`: what device a
    ``.cuda()`` / ``.to(...)`` call moves to (TD204, TD405).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> [f.code for f in lint_source("import torch\\nfor b in loader:\\n    n = torch.randn(3).cuda()\\n")]
        ['TD204']
    """

    def device_of_move(self, move: ast.Call) -> tuple[str, bool] | None:
        """``(device text, sure it is a device)`` of ``.cuda()`` / ``.to(device)``; None for a
        dtype conversion. ``.to(x)`` may name a tensor (its device and dtype): reported, not
        fixed."""
        if move.func.attr == "cuda":
            if move.args:
                return segment(self.context.lines, move.args[0]) or "", True
            return '"cuda"', True
        device = next((kw.value for kw in move.keywords if kw.arg == "device"), None)
        if device is not None:
            return segment(self.context.lines, device) or "", True
        if not move.args:
            return None
        first = move.args[0]
        if self.qualified_names(first) & DTYPES or isinstance(first, ast.Starred):
            return None
        if isinstance(first, ast.Constant) and not isinstance(first.value, (str, int)):
            return None
        text = (dotted(first) or "").lower()
        sure = (
            isinstance(first, ast.Constant)
            or "dev" in text.rsplit(".", 1)[-1]
            or self.callee_is_device(first)
        )
        return segment(self.context.lines, first) or "", sure

    def callee_is_device(self, expr: ast.AST) -> bool:
        return isinstance(expr, ast.Call) and bool(self.callee(expr) & {"torch.device"})


#: methods between a host factory and its move that only change the dtype or layout
_CASTS = frozenset({"bool", "float", "half", "long", "int", "byte", "double", "contiguous", "t"})
#: elementwise methods between a host factory and its move: the result stays on the host
#: (``torch.randn(shape).clamp_(-c, c).to(device)``, ``torch.rand(n).mul(2).cuda()``)
_ELEMENTWISE = frozenset(
    {"clamp", "clamp_", "clip", "clip_", "mul", "mul_", "add", "add_", "sub", "sub_", "div",
     "div_", "abs", "abs_", "neg", "neg_", "exp", "exp_", "sqrt", "sqrt_", "pow", "pow_",
     "sign", "floor", "round", "sin", "cos", "tanh", "sigmoid", "uniform_", "normal_", "fill_",
     "tril", "triu", "tril_", "triu_"}
)  # fmt: skip


class DeviceRules(HostBuiltMoves, PerStepCalls, DeviceMoves, RuleVisitor):
    """TD204 host-created tensors moved every step; TD505 float64 in a CUDA training step.

    Example:
        >>> "TD204" in DeviceRules.CODES
        True
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (
        (r"\.cuda\(|\.to\(",),
        (r"double|float64", r"backward|\.step\("),
        (r"float64|\.double\(\)", r"(?m)^def "),  # (a loss function of another file's loop)
    )

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        if names & FACTORIES and not any(kw.arg in {"device", "generator"} for kw in node.keywords):
            self._check_moved(node)
        elif names & {"torch.tensor", "torch.as_tensor"} and node.args and isinstance(
                node.args[0], ast.Call) and any(n.startswith(("numpy.random.", "random."))
                                                for n in self.callee(node.args[0])):  # fmt: skip
            self._check_moved(node, drawn=True)  # (mixup's lam = torch.tensor(np.random.beta(a, a)).cuda())
        elif isinstance(node.func, ast.Attribute) and node.func.attr in {"cuda", "to"}:
            self.check_helper_built_move(node)  # (a window another function built on the host)
        if self._is_float64(node, names):
            self._check_float64(node)

    # -- TD204 -------------------------------------------------------------------------------
    def _check_moved(self, factory: ast.Call, drawn: bool = False) -> None:
        attribute, child, composed = self.parent(factory), factory, False
        use = self._list_of_factories_used(factory)
        if use is not None:  # (axes = [torch.arange(s) for s in shape]; torch.meshgrid(axes))
            attribute, child, composed = self.parent(use), use, True
        for _ in range(6):  # ((torch.rand(n) > p).cuda()); torch.exp(-c * torch.arange(h) / h).to(d)
            # (and torch.cat([torch.ones(n), torch.zeros(n)]).to(d): a list of host tensors)
            if isinstance(attribute, _COMPOSED) or (
                    isinstance(attribute, ast.Subscript) and attribute.value is child) or (
                    isinstance(attribute, ast.Call) and child in attribute.args
                    and any(n.startswith("torch.") for n in self.callee(attribute))):  # fmt: skip
                attribute, child, composed = self.parent(attribute), attribute, True
            elif (isinstance(attribute, ast.Attribute)
                  and attribute.attr in _CASTS | _RESHAPES | _ELEMENTWISE
                  and isinstance(self.parent(attribute), ast.Call)):  # (torch.triu(...).bool(),
                # DLRM's torch.arange(n).repeat(k, 1).cuda())
                attribute, child, composed = self.parent(self.parent(attribute)), self.parent(
                    attribute), True  # fmt: skip
            else:
                break
        move = self.parent(attribute)
        if not (
            isinstance(attribute, ast.Attribute)
            and attribute.attr in {"cuda", "to"}
            and isinstance(move, ast.Call)
            and move.func is attribute
        ):
            return
        found = self.device_of_move(move)
        if found is None:
            return
        device, sure = found
        reported = self.context.cache.setdefault(("TD204 moves",), set())
        if id(move) in reported:
            return  # ([torch.arange(d), torch.arange(h)]: one copy, said once)
        reported.add(id(move))
        where = self.moved_every_step(move)
        if where is None:
            return
        source = segment(self.context.lines, factory) or ""
        extra = [kw for kw in move.keywords if kw.arg != "device"]
        other_args = move.args[1:] if move.func.attr == "to" and move.args else []
        fix = None
        if (sure and not composed and source.endswith(")") and "#" not in source and not extra
                and not other_args):  # fmt: skip
            fix = replace_call_with(with_keyword(source, f"device={device}"))
        there = (f"keep the draw a Python number (`{self.code_of(factory.args[0])}` broadcasts "
                 "as it is), or draw it on the device (torch.distributions on device tensors)"
                 if drawn else f"create it there, `{self.code_of(factory.func)}(..., "
                 f"device={device})`")  # fmt: skip
        self.report(
            move,
            "TD204",
            f"`{self.code_of(move)}` creates the tensor on the host and copies it to the device "
            f"{where}: {there}",
            fix=None if drawn else fix,
        )

    def moved_every_step(self, move: ast.Call) -> str | None:
        """How often ``move`` runs, for a message ("every iteration of this loop", "on every
        forward call", "on every call of `fn` (called by ...)"); None when not every step: a
        cache filled on a miss, a loop over epochs, a function run once."""
        if self._filled_once(move):
            return None  # (a cache filled on a miss: HiFi-GAN's `if key not in mel_basis:`)
        loops = [lp for lp in self.enclosing_loops(move) if isinstance(lp, _LOOPS)]
        scope = self.enclosing_scope(move)
        in_forward = isinstance(scope, FUNCTIONS) and scope.name == "forward"
        in_step = self.is_step_function(scope)
        helper = None
        if not loops and not in_forward and not in_step:
            helper = self.per_step_call(scope) if isinstance(scope, FUNCTIONS) else None
            if helper is None:  # (nor a helper a forward or a step loop runs: random_rotation_z)
                return None
        if loops and isinstance(loops[0], ast.For) and any(
                "epoch" in n.lower() for n in target_names(loops[0].target)):  # fmt: skip
            return None  # (once an epoch: a sample grid, an evaluation's noise, not every step)
        return helper or (
            "every iteration of this loop"
            if loops
            else ("on every forward call" if in_forward else "on every training step")
        )

    def _list_of_factories_used(self, factory: ast.Call) -> ast.Name | None:
        """The one later use of the name a function binds to a list of host tensors the
        factory makes (``axes = [torch.arange(s) for s in shape]``), when that use is an
        argument of a torch function (``torch.meshgrid(axes)``): the copy's way to the device
        goes on from there."""
        container = self.parent(factory)
        if isinstance(container, ast.ListComp | ast.GeneratorExp) and container.elt is not factory:
            return None
        if not isinstance(container, ast.ListComp | ast.GeneratorExp | ast.List | ast.Tuple):
            return None
        assign, scope = self.parent(container), self.enclosing_scope(factory)
        if not (isinstance(assign, ast.Assign) and len(assign.targets) == 1 and isinstance(
                assign.targets[0], ast.Name) and isinstance(scope, FUNCTIONS)):  # fmt: skip
            return None
        name = assign.targets[0].id
        uses = [n for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id == name
                and isinstance(n.ctx, ast.Load)]  # fmt: skip
        if len(uses) != 1 or len(self.assigned_values(scope, name)) != 1:
            return None
        call = self.parent(uses[0])
        if isinstance(call, ast.Call) and uses[0] in call.args and any(
                n.startswith("torch.") for n in self.callee(call)):  # fmt: skip
            return uses[0]
        return None

    def _filled_once(self, node: ast.AST) -> bool:
        """``node`` runs in the body of a cache-miss test (``if key not in cache:``, ``if
        self.window is None:``) within its function: once per key, not at every call."""
        child, parent = node, self.parent(node)
        while parent is not None and not isinstance(parent, (*FUNCTIONS, *_LOOPS)):
            if isinstance(parent, ast.If) and child in parent.body:
                test = parent.test
                if isinstance(test, ast.Compare) and len(test.ops) == 1 and (
                    isinstance(test.ops[0], ast.NotIn) or (
                        isinstance(test.ops[0], ast.Is) and isinstance(test.comparators[0],
                                                                       ast.Constant)
                        and test.comparators[0].value is None)):  # fmt: skip
                    return True
            child, parent = parent, self.parent(parent)
        return False

    # -- TD505 -------------------------------------------------------------------------------
    def _loss_caller(self, name: str) -> tuple[str, tuple[str, int]] | None:
        """``(caller, site)``: a module-level function of this file that calls ``name`` and
        that a training loop of the project calls (``site``); None."""
        tree, project = self.context.tree, self.context.project
        for function in getattr(tree, "body", ()):
            if isinstance(function, FUNCTIONS) and function.name != name and any(
                    isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == name
                    for c in ast.walk(function)):  # fmt: skip
                hit = project.called_in_loop(function.name, True, self.context.path)  # type: ignore[union-attr]
                if hit is not None:
                    return function.name, hit
        return None

    def _is_float64(self, node: ast.Call, names: set[str]) -> bool:
        if isinstance(node.func, ast.Attribute) and node.func.attr == "double" and not node.args:
            return not names  # x.double(), not torch.double(...)
        dtype = next((kw.value for kw in node.keywords if kw.arg == "dtype"), None)
        if dtype is not None and self.qualified_names(dtype) & FLOAT64:
            return True
        if isinstance(node.func, ast.Attribute) and node.func.attr in {"to", "type"}:
            return any(self.qualified_names(a) & FLOAT64 for a in node.args)
        return False

    def _check_float64(self, node: ast.Call) -> None:
        project = self.context.project
        if not (self.context.uses_cuda or (project is not None and project.uses_cuda)):
            return
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, _LOOPS)]
        context = next((lp for lp in loops if self.is_training_body(lp)), None)
        scope = self.enclosing_scope(node)
        where = "inside a CUDA training step"
        if context is None and isinstance(scope, FUNCTIONS):
            context = scope if self.is_training_body(scope, full=True) else None
            owner = self.parent(scope)
            if isinstance(owner, ast.ClassDef) and framework_step_method(owner, scope):
                context = scope  # (Lightning runs it every step: its backward is the framework's)
                where = f"in `{scope.name}`, which the framework runs every training step"
            project = self.context.project
            hit = None if context is not None or any(map(_walks_data, loops)) or project is None or not isinstance(
                self.parent(scope), ast.Module) else (
                project.called_in_loop(scope.name, True, self.context.path))  # fmt: skip
            if hit is not None:  # (a loss function the training loop calls; not a forward's
                context = scope  # helper: model code keeps float64 on purpose, for precision)
                where = f"in `{scope.name}`, which a CUDA training loop calls ({hit[0]}:{hit[1]})"
            elif context is None and not any(map(_walks_data, loops)) and project is not None and isinstance(
                    self.parent(scope), ast.Module):  # fmt: skip
                caller = self._loss_caller(scope.name)
                if caller is not None:  # (one call deeper: a loss's per-resolution helper)
                    context, hit = scope, caller[1]
                    where = (f"in `{scope.name}`, called by `{caller[0]}`, which a CUDA "
                             f"training loop calls ({hit[0]}:{hit[1]})")
            elif context is None and project is not None and _plain_class(self.parent(scope)):
                owner = self.parent(scope).name  # (an environment's reward: env.log_reward(x)
                hit = project.method_called_in_loop(owner, scope.name)  # every step; not a
                if hit is not None:  # module's, whose float64 is for precision)
                    context = scope
                    where = (f"in `{owner}.{scope.name}`, which a CUDA step loop calls "
                             f"every step ({hit[0]}:{hit[1]})")
        if context is None or self.under_log_gate(node, context):
            return
        self.report(
            node,
            "TD505",
            f"`{self.code_of(node)}` computes in float64 {where}; most GPUs "
            "run fp64 at 1/32-1/64 of fp32 speed: keep float32 (or autocast to bfloat16)",
        )


def _plain_class(node: ast.AST | None) -> bool:
    """A class that is no ``nn.Module`` (nor a Lightning module): a GFlowNet's environment,
    a replay buffer, a reward model written as plain Python.

    Example:
        >>> [_plain_class(ast.parse(s).body[0]) for s in
        ...  ("class Grid:\\n    pass", "class Net(nn.Module):\\n    pass")]
        [True, False]
    """
    return isinstance(node, ast.ClassDef) and not any(
        ast.unparse(b).rsplit(".", 1)[-1].endswith("Module") for b in node.bases)

"""TD305: a Python loop over a model's parameters that updates each one in place.

``for pe, p in zip(ema.parameters(), model.parameters()): pe.mul_(d).add_(p, alpha=1 - d)``
(an EMA), ``for p in model.parameters(): p.data.add_(p.grad, alpha=-lr)`` (hand-written SGD),
``for p in group["params"]: ...``: a few small kernels per parameter, hundreds of launches per
step for a real model, each paying the Python and dispatcher overhead. The multi-tensor ops do
the same arithmetic over the whole list in a few launches: ``torch._foreach_lerp_(ema_params,
params, 1 - decay)``, ``torch._foreach_add_(params, grads, alpha=-lr)``; torch.optim's
optimizers use them (``foreach=True``, ``fused=True``), and
``torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
use_buffers=True)`` keeps an EMA with them. Measured (BENCHMARKS.md, suite ``fused``, module
``torchdoctor.benchmarks.foreach_updates``; CPU, torch 2.13, 100 parameters): the loop takes
2.3x the time of ``torch._foreach_add_`` (SGD) and 5.5x that of ``torch._foreach_lerp_`` (EMA)
with 64 x 64 weights, 1.05x and 1.2-1.3x with 512 x 512 ones, where memory traffic dominates.

Recognised: a ``for`` over ``m.parameters()`` / ``m.named_parameters()`` /
``m.state_dict().values()`` / ``group["params"]`` / a name like ``ema_params`` (also through
``zip``, ``enumerate``, ``list``, a name assigned one of those, and an attribute the class's
methods assign one, ``self.ema = [p.clone() for p in self.trainable]``) whose body is straight-line
in-place arithmetic on the parameters, their ``.data`` or ``.grad`` (``mul_``, ``add_``,
``lerp_``, ``addcmul_``, ``zero_`` of a gradient, ``p.data -= lr * p.grad``, ``copy_`` of an
arithmetic expression). A filter (``if p.grad is None: continue``, ``if name in masks:``) and ``with
torch.no_grad():`` are allowed.

Not reported: loops that only read (counting, norms, ``requires_grad_``); initialisation (an
``init`` / ``reset_parameters`` function, ``nn.init`` calls, ``normal_`` / ``uniform_``,
weights zeroed or scaled by a literal, a function that returns the module it changed (but for
gradient steps or a loop in a loop: MAML's inner steps), a
``test_`` function); a plain ``copy_`` (loading weights once); bodies with other control flow
(``if "bias" in name:``) or other calls (a collective per parameter; ``sum`` / ``zip`` /
``len`` over the models averaged, FedAvg's ``sum(w * sd[k] for sd, w in zip(states,
weights))``, are arithmetic, and so is the lookup of the parameter's own optimizer state,
``s = state.setdefault(name, torch.zeros_like(p))``, a hand-written Adagrad's); the fallback of a
``foreach`` branch.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import dotted_names_in, same_file_callee, target_names
from torchdoctor.lint.visitor import FUNCTIONS, RuleVisitor, dotted, method_name

RULES = (
    Rule(
        "TD305",
        "per-parameter-update-loop",
        "warning",
        "a Python loop over a model's parameters updating each in place (an EMA, hand-written "
        "SGD: mul_/add_/lerp_ per parameter): several small kernels per parameter every step",
        "update all parameters with one multi-tensor op: torch._foreach_lerp_(ema_params, "
        "params, 1 - decay), torch._foreach_add_(params, grads, alpha=-lr); or a torch.optim "
        "optimizer (foreach/fused), or torch.optim.swa_utils.AveragedModel(model, "
        "multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) for an EMA",
        "for pe, p in zip(ema.parameters(), model.parameters()):\n"
        "    pe.mul_(0.999).add_(p, alpha=0.001)",
        "ema_params, params = list(ema.parameters()), list(model.parameters())\n"
        "torch._foreach_lerp_(ema_params, params, 0.001)",
    ),
)

#: what the benchmark measured (see the module docstring)
MEASURED = (
    "measured on a CPU (torch 2.13, 100 parameters of 64 x 64): the loop takes 2.3x (SGD) to "
    "5.5x (EMA) the time of the foreach op"
)
#: in-place arithmetic a parameter update is made of
_UPDATES = frozenset(
    {"add_", "sub_", "mul_", "div_", "lerp_", "copy_", "addcmul_", "addcdiv_", "zero_",
     "clamp_", "clamp_min_", "clamp_max_", "neg_", "sqrt_", "pow_", "sign_", "abs_", "maximum_"}
)  # fmt: skip
#: in-place initialisers: the loop runs once, at construction
_INITIALISERS = frozenset(
    {"normal_", "uniform_", "fill_", "trunc_normal_", "bernoulli_", "exponential_", "random_",
     "orthogonal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"}
)  # fmt: skip
_PARAM_METHODS = frozenset({"parameters", "named_parameters"})
#: tensor methods that only reshape or cast the value they read
_RESHAPES = frozenset({"view_as", "view", "reshape", "reshape_as", "type_as", "flatten"})
_WRAPPERS = frozenset(
    {"builtins.zip", "builtins.enumerate", "builtins.list", "builtins.tuple", "builtins.reversed"}
)
#: functions that run once (initialisation) or are the deliberate one-tensor-at-a-time path
_ONCE = re.compile(r"(?i:init|reset_param|single_tensor)|^test_|^test[A-Z]")  # (pytest's tests)
#: a name that holds a list of parameters: params, ema_params, target_parameters
_PARAMS_NAME = re.compile(r"(^|_)(params|parameters)$", re.IGNORECASE)
#: a method returning the network's weights (DARTS' model.weights(), all but its two alpha
#: tensors; not arch_parameters(), a handful of tensors), trainable_params()
_PARAMS_METHOD = re.compile(r"^(weights|trainable_(params|parameters|weights))$")
_ARITHMETIC = (ast.BinOp, ast.UnaryOp)
#: Python builtins a parameter's update may compute with: numbers, and a sum over the
#: models being averaged (FedAvg, a model soup, an ensemble's mean)
_PLAIN_BUILTINS = frozenset(
    f"builtins.{n}" for n in ("float", "min", "max", "sum", "zip", "len", "enumerate")
)


def _root(expr: ast.AST) -> str | None:
    """``p`` for ``p``, ``p.data``, ``p.grad[0]``, ``pe.mul_(d)`` (a call's receiver)."""
    while True:
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            expr = expr.func.value
        elif isinstance(expr, (ast.Attribute, ast.Subscript)):
            expr = expr.value
        else:
            break
    return expr.id if isinstance(expr, ast.Name) else None


class ParamUpdateRules(RuleVisitor):
    """TD305 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef sgd(model, lr):\\n    for p in model.parameters():\\n"
        ...        "        p.data.add_(p.grad, alpha=-lr)\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD305']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"parameters|params|state_dict\(", r"[a-z]_\(|[-+*/]=|\.data ="),)

    def _parameter_source(self, expr: ast.AST, scope: ast.AST, depth: int = 0) -> int:
        """How many parameter lists ``expr`` iterates (``zip(ema.parameters(),
        model.parameters())``: 2), 0 when none."""
        if isinstance(expr, ast.Call):
            if self.callee(expr) & _WRAPPERS:
                return sum(self._parameter_source(a, scope, depth) for a in expr.args)
            name = method_name(expr)
            if name in _PARAM_METHODS or (name and not expr.args and _PARAMS_METHOD.search(name)):
                return 1  # (DARTS' model.weights())
            if name in {"values", "items"} and method_name(expr.func.value) == "state_dict":
                return 1
            function = same_file_callee(expr) if depth < 2 else None  # (MoCo-style
            return max((self._parameter_source(r.value, function, depth + 1)  # self.params_q():
                        for r in ast.walk(function) if isinstance(r, ast.Return) and r.value),
                       default=0) if function is not None else 0  # its returned list) fmt: skip
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):  # (a list + a list)
            return max(self._parameter_source(expr.left, scope, depth),
                       self._parameter_source(expr.right, scope, depth))  # fmt: skip
        if isinstance(expr, ast.Subscript):  # group["params"], opt.param_groups[0]["params"]
            return int(isinstance(expr.slice, ast.Constant) and expr.slice.value == "params")
        if isinstance(expr, (ast.ListComp, ast.GeneratorExp)):
            return self._parameter_source(expr.generators[0].iter, scope, depth)
        if isinstance(expr, ast.Name) and depth == 0:  # params = list(model.parameters())
            if _PARAMS_NAME.search(expr.id):  # def update_ema(target_params, source_params)
                return 1
            values = self.assigned_values(scope, expr.id)
            return max((self._parameter_source(v, scope, 1) for v in values), default=0)
        if (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
                and expr.value.id == "self" and depth < 2):  # fmt: skip
            if _PARAMS_NAME.search(expr.attr):  # (self.ema_params)
                return 1
            values = self._self_assigned(scope, expr.attr)  # (self.ema = [p.clone() for p in ...])
            return max((self._parameter_source(v, scope, depth + 1) for v in values), default=0)
        return 0

    def _self_assigned(self, scope: ast.AST, attr: str) -> list[ast.expr]:
        """Values the methods of ``scope``'s class assign to ``self.<attr>`` (one table per
        class, cached: ``self.trainable = [p for n, p in net.named_parameters() if ...]``)."""
        cls = scope
        while cls is not None and not isinstance(cls, ast.ClassDef):
            cls = self.parent(cls)
        if cls is None:
            return []
        key = ("self_assignments", id(cls))
        table = self.context.cache.get(key)
        if table is None:
            table = {}
            for method in cls.body:
                if not isinstance(method, FUNCTIONS):
                    continue
                for node in ast.walk(method):
                    if isinstance(node, ast.Assign):
                        for t in node.targets:
                            if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                                    and t.value.id == "self"):  # fmt: skip
                                table.setdefault(t.attr, []).append(node.value)
            self.context.cache[key] = table
        return table.get(attr, [])

    def _updates(self, loop: ast.For) -> list[ast.AST] | None:
        """The in-place updates of the loop's parameters when the body is a straight-line
        update (filters and ``with`` blocks allowed); None when it is anything else."""
        derived = set(self.loop_targets(loop))
        updates: list[ast.AST] = []
        pending = list(loop.body)
        while pending:
            stmt = pending.pop(0)
            if isinstance(stmt, ast.With):
                pending[:0] = stmt.body
            elif isinstance(stmt, ast.If):
                if stmt.orelse or not self._is_filter(stmt.test, derived):
                    return None
                if not (len(stmt.body) == 1 and isinstance(stmt.body[0], ast.Continue)):
                    pending[:0] = stmt.body
            elif isinstance(stmt, (ast.Expr, ast.Assign, ast.AugAssign)):
                if not self._plain_statement(stmt, derived, updates):
                    return None
            elif not isinstance(stmt, ast.Pass):
                return None
        return updates

    @staticmethod
    def _is_filter(test: ast.AST, derived: set[str]) -> bool:
        """``p.grad is None``, ``not p.requires_grad``, ``v.dtype.is_floating_point``, ``name
        in masks`` (the loop's own key looked up): a test that only skips parameters."""
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            test = test.operand
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            if isinstance(test.ops[0], (ast.Is, ast.IsNot)):
                return _root(test.left) in derived
            if isinstance(test.ops[0], (ast.In, ast.NotIn)):  # (a pruning mask's: `if name in
                return isinstance(test.left, ast.Name) and test.left.id in derived  # masks:`)
        if isinstance(test, ast.Call) and not test.args:  # v.is_floating_point()
            test = test.func
        return (  # (``v.dtype.is_floating_point``: YOLOv5's EMA skips integer buffers)
            isinstance(test, ast.Attribute)
            and test.attr in {"requires_grad", "is_floating_point"}
            and _root(test.value) in derived
        )

    def _plain_statement(self, stmt: ast.AST, derived: set[str], updates: list) -> bool:
        """Record the updates of one statement; False when it does something else (a call
        that is neither a tensor method of a parameter nor a torch function, an initialiser)."""
        for call in (n for n in ast.walk(stmt) if isinstance(n, ast.Call)):
            name = method_name(call)
            names = self.callee(call)
            if name in _INITIALISERS or any(n.startswith("torch.nn.init.") for n in names):
                return False
            if name in _UPDATES and _root(call.func.value) in derived:
                updates.append(call)
            elif name in _RESHAPES and not names:  # (theta[i:i + n].view_as(p): a flat
                continue  # vector's slice, unflattened into each parameter in turn)
            elif any(n.startswith("torch.") for n in names):
                if any(n.startswith("torch.distributed.") for n in names):
                    return False
            elif name in {"setdefault", "get"} and call.args and _root(call.args[0]) in derived:
                continue  # (an optimizer's state of this parameter: state.setdefault(p, ...))
            elif name is None or not (
                _root(call.func.value) in derived or _keyed_by(call.func.value, derived)
            ):  # (``msd[k].detach()``: the source entry of the key the loop walks)
                if not names & _PLAIN_BUILTINS:  # (FedAvg: `sum(w * sd[k] for sd, w in
                    return False  # zip(states, weights))`, averaged into each parameter)
        if isinstance(stmt, ast.AugAssign) and _root(stmt.target) in derived:
            updates.append(stmt)
        elif isinstance(stmt, ast.Assign):
            targets = [_root(t) for t in stmt.targets]
            if all(isinstance(t, ast.Name) for t in stmt.targets):
                if {n.id for n in _names(stmt.value)} & derived:
                    derived |= {t for t in targets if t}  # d_p = p.grad
            elif set(targets) & derived and isinstance(stmt.value, _ARITHMETIC):
                updates.append(stmt)  # p.data = p.data - lr * p.grad
        return True

    def _runs_once(self, loop: ast.For) -> bool:
        """Inside an initialisation function (or a test), a function that returns the module
        it changed (``def zero_module(m): ...; return m``: a builder), or the fallback of a
        ``foreach`` branch."""
        node = self.parent(loop)
        while node is not None:
            if isinstance(node, FUNCTIONS):
                return bool(_ONCE.search(node.name)) or (
                    self._returns_module(node, loop) and not self._steps(loop, node))
            if isinstance(node, ast.If) and "foreach" in self.code_of(node.test):
                return True
            node = self.parent(node)
        return False

    def _steps(self, loop: ast.For, function: ast.AST) -> bool:
        """The loop applies gradients (reads ``.grad``) or runs inside another loop of the
        function: MAML's inner steps on a model it then returns, not a builder."""
        if any(isinstance(n, ast.Attribute) and n.attr == "grad" for n in ast.walk(loop)):
            return True
        node = self.parent(loop)
        while node is not None and node is not function:
            if isinstance(node, (ast.For, ast.While)):
                return True
            node = self.parent(node)
        return False

    @staticmethod
    def _returns_module(function: ast.AST, loop: ast.For) -> bool:
        modules = {
            dotted(c.func.value)
            for c in ast.walk(loop.iter)
            if isinstance(c, ast.Call) and method_name(c) in _PARAM_METHODS
        } - {None}
        return any(
            isinstance(n, ast.Return) and n.value is not None and dotted(n.value) in modules
            for n in ast.walk(function)
        )

    def visit_For(self, node: ast.For) -> None:
        if node.orelse:
            return
        lists = self._parameter_source(node.iter, self.enclosing_scope(node))
        if not lists:
            return
        updates = self._updates(node)
        if not updates or self._runs_once(node):
            return
        if all(_plain_copy(u) for u in updates):
            return  # loading or restoring weights: once, not every step
        if all(_by_a_constant(u) for u in updates):
            return  # zeroing or scaling the weights by a literal: initialisation, a test
        keys = target_names(node.target)
        paired = any(isinstance(n, ast.Subscript) and set(dotted_names_in(n.slice)) & keys
                     for u in updates for n in ast.walk(u))  # (YOLOv5: `v += (1 - d) * msd[k]`)
        if lists > 1 or paired:
            cure = (
                "torch._foreach_lerp_(ema_params, params, 1 - decay) updates them all in a few "
                "kernels (or torch.optim.swa_utils.AveragedModel(model, multi_avg_fn="
                "get_ema_multi_avg_fn(decay), use_buffers=True))"
            )
        else:
            cure = (
                "torch._foreach_* ops update them all in a few kernels "
                "(torch._foreach_add_(params, grads, alpha=-lr), torch._foreach_mul_), or let "
                "a torch.optim optimizer (foreach/fused) do it"
            )
        self.report(
            node,
            "TD305",
            f"a Python loop over parameters updates each one in place ("
            f"`{self.code_of(updates[0])}`): several small kernels per parameter, hundreds per "
            f"step for a real model; {cure}; {MEASURED}",
        )


def _names(expr: ast.AST) -> list[ast.AST]:
    return [n for n in ast.walk(expr) if isinstance(n, ast.Name)]


def _plain_copy(update: ast.AST) -> bool:
    """``p.copy_(q)`` / ``p.data.copy_(q.data)``: no arithmetic in what is copied."""
    return (
        isinstance(update, ast.Call)
        and method_name(update) == "copy_"
        and not any(isinstance(n, _ARITHMETIC) for a in update.args for n in ast.walk(a))
        and not any(
            method_name(c) in _UPDATES | {"mul", "add", "sub", "div", "lerp"}
            for a in update.args
            for c in ast.walk(a)
            if isinstance(c, ast.Call)
        )
    )


def _by_a_constant(update: ast.AST) -> bool:
    """``p.zero_()``, ``p.data.mul_(1.5)``, ``p *= 2``: the weights (not their gradients)
    changed by literals only, which no training step does (it reads a rate, a gradient, another
    model)."""
    if isinstance(update, ast.Call):
        receiver, values = update.func, [*update.args, *(k.value for k in update.keywords)]
    elif isinstance(update, ast.AugAssign):
        receiver, values = update.target, [update.value]
    else:
        return False
    if any(isinstance(n, ast.Attribute) and n.attr == "grad" for n in ast.walk(receiver)):
        return False
    return all(isinstance(n, (ast.Constant, ast.UnaryOp, ast.unaryop)) for v in values
               for n in ast.walk(v))  # fmt: skip


def _keyed_by(expr: ast.AST, derived: set[str]) -> bool:
    """``msd[k]`` with ``k`` a loop variable: the entry of another state dict the loop pairs
    with its own (YOLOv5's EMA: ``for k, v in ema.state_dict().items(): ... msd[k]``).

    Example:
        >>> _keyed_by(ast.parse("msd[k]").body[0].value, {"k", "v"})
        True
    """
    return (isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Name)
            and expr.slice.id in derived)  # fmt: skip

"""TD509: the log of a softmax, and a softmax fed to cross-entropy.

``torch.log(F.softmax(x, d))`` (also ``F.softmax(x, d).log()``, ``torch.log(p + eps)`` or of
``p.clamp(min=eps)``, and ``p = F.softmax(z, -1)`` then ``torch.log(p)`` / ``p.log()`` in the
same function) runs two kernels and keeps the softmax output for the backward, where
``F.log_softmax(x, d)`` is one fused kernel computed as ``x - logsumexp(x)``. It is also the
numerically stable form: a probability that underflows to 0 (logits ~17 apart in float16,
~88 in float32) makes the log -inf and its gradient NaN, and the ``+ eps`` workaround changes
the result. ``F.nll_loss(torch.log(F.softmax(x, 1)), y)`` is ``F.cross_entropy(x, y)``.

``F.cross_entropy(F.softmax(x, 1), y)`` (also ``nn.CrossEntropyLoss()(...)`` and a
``criterion`` assigned ``nn.CrossEntropyLoss(...)``, in the function or on ``self``) applies
log_softmax to probabilities: the softmax is applied twice, a wasted kernel and a different
loss, bounded and with gradients that shrink as the model grows confident. Pass the logits.

Not reported: a softmax used without a log (sampling, attention weights, probabilities),
``log_softmax``, the log of anything else (``sigmoid`` with binary cross-entropy is TD510), soft targets
(``F.cross_entropy(x, F.softmax(t, 1))``: the second argument), a name also assigned something
other than a softmax or modified in place (``p[mask] = 0``, ``p = p * w``), and a log of a
softmax mixed with other terms (``torch.log(p * w)``, ``torch.log(1 - p)``). Where a softmax
result is both used and logged, only the log is reported.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.call_index import calls_named
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import FUNCTIONS, RuleVisitor, keyword, method_name

RULES = (
    Rule(
        "TD509",
        "softmax-then-log",
        "warning",
        "torch.log of a softmax (two kernels, the softmax kept for backward, -inf and NaN "
        "gradients when a probability underflows), or a softmax passed to cross_entropy, "
        "which applies log_softmax itself (a softmax applied twice: a wrong loss)",
        "F.log_softmax(x, dim) is one fused, numerically stable kernel "
        "(F.nll_loss(F.log_softmax(x, 1), y) is F.cross_entropy(x, y)); pass the logits, not "
        "probabilities, to cross_entropy / nn.CrossEntropyLoss",
        "y = torch.log(torch.softmax(x, dim=-1))",
        "y = torch.nn.functional.log_softmax(x, dim=-1)",
    ),
)

_SOFTMAX = frozenset(
    {"torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax",
     "torch.Tensor.softmax"}
)  # fmt: skip
_SOFTMAX_MODULE = frozenset({"torch.nn.Softmax", "torch.nn.modules.activation.Softmax"})
_LOG = frozenset({"torch.log", "torch.Tensor.log"})
_CROSS_ENTROPY = frozenset({"torch.nn.functional.cross_entropy"})
_CROSS_ENTROPY_MODULE = frozenset(
    {"torch.nn.CrossEntropyLoss", "torch.nn.modules.loss.CrossEntropyLoss"}
)
_NLL = frozenset({"torch.nn.functional.nll_loss"})
_NLL_MODULE = frozenset({"torch.nn.NLLLoss", "torch.nn.modules.loss.NLLLoss"})
#: methods that keep every element's value: log(p.detach()) is log_softmax(x).detach()
_KEEPS_VALUES = frozenset(
    {"detach", "float", "double", "clone", "contiguous", "to", "cpu", "cuda", "squeeze",
     "unsqueeze", "transpose", "permute", "movedim", "swapaxes", "reshape", "view", "flatten"}
)  # fmt: skip
#: functions / methods that pick some of the elements, values unchanged: log(p.diag()) and
#: log(p.gather(1, y)) are the picked entries of log_softmax(x)
_SELECTS = frozenset({"diag", "diagonal", "gather", "index_select", "take_along_dim"})
_EPS_NAME = re.compile(r"(^|_)(eps|epsilon|tiny|delta|smooth)\w*$", re.IGNORECASE)
_CLAMPS = frozenset({"clamp", "clip", "clamp_min"})


class SoftmaxRules(RuleVisitor):
    """TD509 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\nimport torch.nn.functional as F\\n"
        ...        "def scores(logits):\\n    p = F.softmax(logits, -1)\\n"
        ...        "    return torch.log(p + 1e-9)\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(5, 'TD509')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"softmax|Softmax", r"log_?\(|cross_entropy|CrossEntropyLoss"),)
    #: what makes the probabilities: functions, module classes, the tensor method (a subclass
    #: looks for another maker: rules_sigmoid_bce.py)
    SOURCES, SOURCE_MODULES, SOURCE_METHOD = _SOFTMAX, _SOFTMAX_MODULE, "softmax"
    #: ``x.softmax()`` needs its dim to be torch's (``x.sigmoid()`` takes none)
    METHOD_NEEDS_ARGUMENTS = True

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        if names & _LOG and len(node.args) == 1 and not node.keywords:
            self._check_log(node, node.args[0])
        elif method_name(node) in {"log", "log_"} and not names and not node.args:
            self._check_log(node, node.func.value)  # type: ignore[attr-defined]
        elif node.args and self._is_loss(node, _CROSS_ENTROPY, _CROSS_ENTROPY_MODULE):
            self._check_cross_entropy(node)
        elif keyword(node, "input") is not None and names & _CROSS_ENTROPY:
            self._check_cross_entropy(node)

    # -- the log of a softmax ------------------------------------------------------------------
    def _check_log(self, node: ast.Call, argument: ast.AST) -> None:
        found = self._softmax_value(argument, node, eps_allowed=True)
        if found is None:
            return
        softmax, eps, via = found
        inner = self._softmax_input(softmax)
        fused = f"F.log_softmax({inner})" if inner else "F.log_softmax(x, dim)"
        parts = [f"`{self.code_of(node)}`"]
        if via is not None:
            parts.append(f"(`{via.id}` = `{self.code_of(softmax)}`, line {softmax.lineno})")
        text = (
            " ".join(parts) + " takes the log of a softmax: two kernels, the softmax output kept "
            "for backward, and a probability that underflows to 0 gives -inf (NaN gradients); "
            f"`{fused}` is one fused, numerically stable kernel"
        )
        if eps is not None:
            floor = self.code_of(eps)
            text += f" (adding or clamping to `{floor}` to avoid the -inf changes the result)"
        if self._in_nll(node):
            text += "; and `F.nll_loss(F.log_softmax(x, 1), y)` is `F.cross_entropy(x, y)`"
        self.report(node, "TD509", text)

    def _in_nll(self, node: ast.Call) -> bool:
        """``node`` is the input of ``F.nll_loss(...)`` / ``nn.NLLLoss()(...)``."""
        parent = self.parent(node)
        if isinstance(parent, ast.keyword) and parent.arg == "input":
            parent = self.parent(parent)
        elif not (isinstance(parent, ast.Call) and parent.args and parent.args[0] is node):
            return False
        return isinstance(parent, ast.Call) and self._is_loss(parent, _NLL, _NLL_MODULE)

    # -- a softmax passed to cross_entropy -----------------------------------------------------
    def _check_cross_entropy(self, node: ast.Call) -> None:
        argument = node.args[0] if node.args else keyword(node, "input")
        found = self._softmax_value(argument, node, eps_allowed=True) if argument else None
        if found is None:
            return
        softmax, _, via = found
        inner = self._softmax_input(softmax)
        logits = inner.split(",")[0].strip() if inner else "the logits"
        what = f" (`{via.id}` = `{self.code_of(softmax)}`, line {softmax.lineno})" if via else ""
        self.report(
            node,
            "TD509",
            f"`{self.code_of(node)}`{what} feeds probabilities to cross-entropy, which applies "
            "log_softmax itself: the softmax runs twice, a wasted kernel, and it also changes "
            "the loss (bounded, its gradients shrink as predictions sharpen, so training "
            f"slows or stalls); pass the logits (`{logits}`) instead",
        )

    def _is_loss(self, call: ast.Call, functions: frozenset, modules: frozenset) -> bool:
        """``F.cross_entropy(...)``, ``nn.CrossEntropyLoss()(...)``, or ``criterion(...)`` /
        ``self.criterion(...)`` where every assignment of it builds the module."""
        if self.callee(call) & functions:
            return True
        func = call.func
        if isinstance(func, ast.Call):
            return bool(self.callee(func) & modules)
        values = self._values_of(func, call)
        return bool(values) and all(
            isinstance(v, ast.Call) and self.callee(v) & modules for v in values
        )

    # -- what a value is ----------------------------------------------------------------------
    def _softmax_value(
        self, expr: ast.AST, at: ast.AST, eps_allowed: bool
    ) -> tuple[ast.Call, ast.AST | None, ast.Name | None] | None:
        """``(softmax call, eps term or None, name it went through or None)`` when ``expr`` is
        a softmax (kept values: ``.detach()``, an index), possibly plus a small constant or
        clamped from below, directly or through a local name assigned only that."""
        expr = _unwrap(expr)
        eps = None
        if eps_allowed:
            expr, eps = _strip_eps(expr)
            expr = _unwrap(expr)
        if isinstance(expr, ast.Call) and self._is_softmax(expr):
            return expr, eps, None
        if isinstance(expr, ast.Name):
            value = self._only_value(expr, at)
            if value is not None:
                found = self._softmax_value(value, value, eps_allowed=eps is None)
                if found is not None and found[2] is None:
                    return found[0], eps or found[1], expr
        return None

    def _is_softmax(self, call: ast.Call) -> bool:
        """``call`` makes the probabilities (:attr:`SOURCES` and the rest): a function, a module
        built inline, a module bound to a name or ``self`` attribute, or the tensor method."""
        names = self.callee(call)
        if names:
            return bool(names & self.SOURCES)
        func = call.func
        if isinstance(func, ast.Call):  # nn.Softmax(dim=1)(x)
            return bool(self.callee(func) & self.SOURCE_MODULES)
        receiver = func.value if isinstance(func, ast.Attribute) else None
        if isinstance(func, ast.Name) or (
            isinstance(receiver, ast.Name) and receiver.id == "self"
        ):  # act = nn.Sigmoid(); self.softmax = nn.Softmax(dim=-1)
            values = self._values_of(func, call)
            return bool(values) and all(
                isinstance(v, ast.Call) and self.callee(v) & self.SOURCE_MODULES for v in values
            )
        if method_name(call) != self.SOURCE_METHOD:
            return False
        return bool(call.args or call.keywords) or not self.METHOD_NEEDS_ARGUMENTS

    def _softmax_input(self, call: ast.Call) -> str:
        """The arguments ``log_softmax`` would take: ``'x, -1'``."""
        if isinstance(call.func, ast.Call):  # nn.Softmax(dim=1)(x)
            module = call.func
            parts = (*call.args, *module.args, *module.keywords)
            return ", ".join(self.code_of(a) for a in parts)
        if method_name(call) == "softmax" and not self.callee(call):
            receiver_node = call.func.value  # type: ignore[attr-defined]
            if isinstance(receiver_node, ast.Name) and receiver_node.id == "self":
                return ", ".join([*(self.code_of(a) for a in call.args), "dim"])
            receiver = self.code_of(receiver_node)
            rest = [self.code_of(a) for a in (*call.args, *call.keywords)]
            return ", ".join([receiver, *rest])
        return ", ".join(self.code_of(a) for a in (*call.args, *call.keywords))

    def _only_value(self, name: ast.Name, at: ast.AST) -> ast.AST | None:
        """The one value ``name`` is assigned in the function around ``at``, before ``at``,
        when nothing else binds or modifies it there; None otherwise."""
        scope = self.enclosing_scope(at)
        if not isinstance(scope, FUNCTIONS):
            return None
        values = self.assigned_values(scope, name.id)
        if len(values) != 1 or values[0].lineno >= at.lineno:
            return None
        return None if _modified(scope, name.id, values[0]) else values[0]

    def _passed(self, function: ast.AST, name: str) -> list[ast.AST]:
        """The values the file's calls of ``function`` give its parameter ``name`` (through the
        callers' assignments: ``criterion = nn.BCELoss()`` then ``train(..., criterion)``);
        empty when a call passes something unknown."""
        values: list[ast.AST] = []
        for call in calls_named(self, function.name):  # type: ignore[attr-defined]
            for arg in _call_arguments(call, function, name):
                made = self.assigned_values(self.enclosing_scope(call), arg.id) if isinstance(
                    arg, ast.Name) else [arg]  # fmt: skip
                if not made:
                    return []
                values += made
        return values

    def _values_of(self, func: ast.AST, at: ast.AST) -> list[ast.AST]:
        """What ``criterion`` (assigned in the function or the module) or ``self.criterion``
        (assigned in the class) is bound to."""
        if isinstance(func, ast.Name):
            scope = self.enclosing_scope(at)
            values = self.assigned_values(scope, func.id)
            if not values and isinstance(scope, FUNCTIONS) and self.context.tree is not None:
                if not any(a.arg == func.id for a in _arguments(scope)):
                    values = self.assigned_values(self.context.tree, func.id)
                else:  # (a parameter: what the file's calls pass, criterion=nn.BCELoss())
                    values = self._passed(scope, func.id)
            return values
        if not (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "self"
        ):
            return []
        node = self.enclosing_scope(at)
        while not isinstance(node, (ast.ClassDef, ast.Module)):
            node = self.enclosing_scope(node)
        if not isinstance(node, ast.ClassDef):
            return []
        key = ("self attributes", id(node))
        table = self.context.cache.get(key)
        if table is None:
            table = {}
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.Assign):
                    for t in stmt.targets:
                        if (
                            isinstance(t, ast.Attribute)
                            and isinstance(t.value, ast.Name)
                            and t.value.id == "self"
                        ):
                            table.setdefault(t.attr, []).append(stmt.value)
            self.context.cache[key] = table
        return table.get(func.attr, [])


def _call_arguments(call: ast.Call, function: ast.AST, name: str) -> list[ast.AST]:
    """What ``call`` passes ``function``'s parameter ``name`` (by keyword or position)."""
    found = [k.value for k in call.keywords if k.arg == name]
    params = [a.arg for a in _arguments(function)]
    if isinstance(call.func, ast.Attribute) and params[:1] == ["self"]:
        params = params[1:]
    if not found and name in params and params.index(name) < len(call.args):
        found = [call.args[params.index(name)]]
    return [a for a in found if not isinstance(a, ast.Starred)]


def _arguments(function: ast.AST) -> list[ast.arg]:
    args = function.args  # type: ignore[attr-defined]
    every = (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
    return [a for a in every if a is not None]


def _unwrap(expr: ast.AST) -> ast.AST:
    """``p.detach().float()``, ``p[:, 0]``, ``p.transpose(1, 2)``, ``torch.diag(p)``,
    ``p.gather(1, y)`` -> ``p`` (the same values, elementwise, rearranged or picked)."""
    while True:
        if isinstance(expr, ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Call) and method_name(expr) in _KEEPS_VALUES:
            expr = expr.func.value  # type: ignore[attr-defined]
        elif isinstance(expr, ast.Call) and method_name(expr) in _SELECTS:
            receiver = expr.func.value  # type: ignore[attr-defined]
            if isinstance(receiver, ast.Name) and receiver.id == "torch":
                if not expr.args:
                    return expr
                receiver = expr.args[0]
            expr = receiver
        else:
            return expr


def _strip_eps(expr: ast.AST) -> tuple[ast.AST, ast.AST | None]:
    """``(p, eps)`` for ``p + eps`` / ``eps + p`` (a small constant or an eps-named value),
    ``p.clamp(min=eps)``, ``torch.clamp(p, min=eps)``, ``p.clamp_min(eps)``."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        for value, other in ((expr.left, expr.right), (expr.right, expr.left)):
            if _is_eps(other):
                return value, other
        return expr, None
    if isinstance(expr, ast.Call) and method_name(expr) in _CLAMPS:
        receiver = expr.func.value  # type: ignore[attr-defined]
        if isinstance(receiver, ast.Name) and receiver.id == "torch" and expr.args:
            receiver, rest = expr.args[0], expr.args[1:]
        else:
            rest = expr.args
        low = rest[0] if rest else keyword(expr, "min")
        if low is not None and _is_eps(low) and len(rest) <= 1 and keyword(expr, "max") is None:
            return receiver, low
    return expr, None


def _is_eps(expr: ast.AST) -> bool:
    """A small positive constant (``1e-8``), or a name like ``eps`` / ``self.epsilon``."""
    if isinstance(expr, ast.Constant):
        value = expr.value
        return isinstance(value, float) and 0 < value < 1e-2
    if isinstance(expr, ast.Name):
        return bool(_EPS_NAME.search(expr.id))
    if isinstance(expr, ast.Attribute):
        return bool(_EPS_NAME.search(expr.attr))
    return False


def _modified(scope: ast.AST, name: str, assigned: ast.AST) -> bool:
    """``name`` is bound other than by its one assignment (a loop target, ``+=``, an unpacked
    tuple target, a parameter; ``p, q = f(a), g(b)`` pairs them) or changed in place (``p[m] = 0``, ``p.mul_(w)``) in ``scope``."""
    if any(a.arg == name for a in _arguments(scope)):
        return True
    for node in ast.walk(scope):
        if isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
            parent = getattr(node, "td_parent", None)
            paired = isinstance(parent, ast.Tuple) and isinstance(  # (p, q = sigmoid(a), ...)
                getattr(parent, "td_parent", None), ast.Assign) and any(
                v is assigned for v in getattr(parent.td_parent.value, "elts", ()))  # fmt: skip
            if not (isinstance(parent, ast.Assign) and parent.value is assigned) and not paired:
                return True
        elif isinstance(node, ast.Subscript) and not isinstance(node.ctx, ast.Load):
            if isinstance(node.value, ast.Name) and node.value.id == name:
                return True
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            if (
                isinstance(receiver, ast.Name)
                and receiver.id == name
                and node.func.attr.endswith("_")
                and not node.func.attr.startswith("_")
            ):
                return True
    return False

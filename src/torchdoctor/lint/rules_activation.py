"""TD508 hand-written activation functions that torch ships as one fused kernel.

minGPT's ``NewGELU`` (``0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715
* torch.pow(x, 3.0))))``), BERT-era ``x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))`` and
``x * torch.sigmoid(x)`` run as 3 to 9 elementwise kernels, each reading and writing the whole
activation, and autograd saves their intermediates for the backward; ``F.gelu(x,
approximate="tanh")``, ``F.gelu(x)`` and ``F.silu(x)`` compute the same function in one kernel
each way (up to float rounding). The tanh form is told by its constant 0.044715, the erf form
by ``erf`` of ``x`` over the square root of 2 multiplied by ``x``, SiLU by ``x * sigmoid(x)``
with the same ``x`` (``x * sigmoid(1.702 * x)``, CLIP's QuickGELU, is another function).

Softplus written as ``torch.log1p(torch.exp(x))`` or ``torch.log(1 + torch.exp(x))`` (the
forward-forward example's loss) is two kernels and not even the same function in floating
point: ``exp`` overflows to inf above x = 88 in float32 (11 in float16), where
``F.softplus(x)`` is one kernel that switches to ``x`` for large inputs. ``torch.log(
torch.sigmoid(x))`` underflows to -inf below x = -88 (NaN gradients) where ``F.logsigmoid(x)``
is one stable kernel.
"""

from __future__ import annotations

import ast
import math
import re

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import RuleVisitor, method_name

#: statements without a body: where a value is read for one use
_SIMPLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return)
TANH = frozenset({"torch.tanh", "torch.nn.functional.tanh", "torch.Tensor.tanh"})
ERF = frozenset({"torch.erf", "torch.special.erf", "torch.Tensor.erf"})
SIGMOID = frozenset(
    {"torch.sigmoid", "torch.nn.functional.sigmoid", "torch.special.expit", "torch.Tensor.sigmoid"}
)
_SQRT = frozenset({"math.sqrt", "numpy.sqrt", "torch.sqrt"})
EXP = frozenset({"torch.exp", "torch.Tensor.exp", "torch.special.exp"})
LOG1P = frozenset({"torch.log1p", "torch.Tensor.log1p", "torch.special.log1p"})
LOG = frozenset({"torch.log", "torch.Tensor.log"})
MUL = frozenset({"torch.mul", "torch.multiply", "torch.Tensor.mul", "torch.Tensor.mul_",
                 "torch.Tensor.multiply"})  # fmt: skip
_GRADIENT = re.compile(r"backward|_back$|_bwd$|grad|deriv", re.IGNORECASE)

RULES = (
    Rule(
        "TD508",
        "hand-written-activation",
        "info",
        "hand-written GELU (tanh or erf form), SiLU (x * sigmoid(x)), softplus (log1p(exp(x))) "
        "or log-sigmoid (log(sigmoid(x))): several elementwise kernels and saved intermediates "
        "where torch has one fused kernel (for softplus and log-sigmoid, a stable one)",
        "torch.nn.functional.gelu(x, approximate='tanh') for the tanh form, "
        "torch.nn.functional.gelu(x) for the erf form, torch.nn.functional.silu(x) for "
        "x * sigmoid(x), F.softplus(x), F.logsigmoid(x): the same function (up to rounding, and "
        "without the overflow) in one kernel forward and backward",
        "y = 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))",
        "y = torch.nn.functional.gelu(x, approximate='tanh')",
    ),
)


class ActivationRules(RuleVisitor):
    """TD508 hand-written GELU / SiLU.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = "import torch\\ndef act(x):\\n    return x * torch.sigmoid(x)\\n"
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(3, 'TD508')]
    """

    RULES = RULES
    CODES = ("TD508",)
    TRIGGERS = ((r"tanh|erf|sigmoid|expit|exp",),)

    def visit_Call(self, node: ast.Call) -> None:
        if self._in_gradient_formula(node):
            return
        names = self.callee(node) or {f"torch.Tensor.{method_name(node)}"}
        if names & TANH and _has_constant(node, 0.044715) and self._tanh_gelu(node):
            self.report(node, "TD508", _message("tanh GELU", node, self,
                                                "F.gelu(x, approximate='tanh')"))  # fmt: skip
        elif names & ERF and self._erf_gelu(node):
            self.report(node, "TD508", _message("erf GELU", node, self, "F.gelu(x)"))
        elif names & (LOG1P | LOG) and self._log_of(node, names):
            self._log_of(node, names, report=True)
        elif names & MUL and self._mul_operands(node):  # x.mul(x.sigmoid()), torch.mul(x, ...)
            self._silu(node, *self._mul_operands(node))  # type: ignore[misc]

    def _mul_operands(self, node: ast.Call) -> tuple[ast.AST, ast.AST] | None:
        if len(node.args) == 2 and self.callee(node) & {"torch.mul", "torch.multiply"}:
            return node.args[0], node.args[1]
        if len(node.args) == 1 and isinstance(node.func, ast.Attribute) and not self.callee(node):
            return node.func.value, node.args[0]
        return None

    def _silu(self, node: ast.AST, left: ast.AST, right: ast.AST) -> bool:
        """``x * sigmoid(x)`` with the same ``x`` on both sides: report it."""
        for value, other in ((left, right), (right, left)):
            if isinstance(other, ast.Call) and self._is_sigmoid(other):
                argument = other.args[0] if other.args else getattr(other.func, "value", None)
                if argument is not None and ast.dump(argument) == ast.dump(value):
                    self.report(node, "TD508", _message("SiLU", node, self, "F.silu(x)"))
                    return True
        return False

    def _log_of(self, node: ast.Call, names: set[str], report: bool = False) -> bool:
        """``log1p(exp(x))`` / ``log(1 + exp(x))``: softplus; ``log(sigmoid(x))``: log-sigmoid."""
        argument = self._only_argument(node)
        if argument is None:
            return False
        if names & LOG and isinstance(argument, ast.BinOp) and isinstance(argument.op, ast.Add):
            pairs = ((argument.left, argument.right), (argument.right, argument.left))
            inner = next((v for v, one in pairs if _is_number(one, 1.0)), None)
            what = "softplus" if inner is not None and self._is_call_of(inner, EXP) else None
        elif names & LOG1P:
            what = "softplus" if self._is_call_of(argument, EXP) else None
        else:
            name = argument.id if isinstance(argument, ast.Name) else None
            if name is not None:  # (Glow's `s = torch.sigmoid(h)`, then log(s))
                values = self.assigned_values(self.enclosing_scope(node), name)
                argument = values[0] if len(values) == 1 else argument
            what = "log-sigmoid" if isinstance(argument, ast.Call) and self._is_sigmoid(
                argument) else None  # fmt: skip
        if what and report:
            fused = "F.softplus(x)" if what == "softplus" else "F.logsigmoid(x)"
            edge = "exp overflows to inf above 88 (float32)" if what == "softplus" else (
                "the sigmoid underflows to 0 below -88 (float32): -inf, NaN gradients")  # fmt: skip
            kept = self._used_elsewhere(node, name) if what == "log-sigmoid" and name else None
            said = _message(what, node, self, fused) if kept is None else (
                f"hand-written log-sigmoid (`{self.code_of(node)}`): the sigmoid `{name}` is "
                f"kept for `{self.code_of(kept)}`, so {fused} saves little time here")  # fmt: skip
            self.report(node, "TD508", said + f"; and it is "
                        f"stable where the hand-written form is not ({edge})")  # fmt: skip
        return what is not None

    def _used_elsewhere(self, log: ast.Call, name: str) -> ast.AST | None:
        """The statement of ``log``'s function that reads the sigmoid ``name`` for another
        use (Glow's coupling, ``out_b = (in_b + t) * s``): that sigmoid runs anyway."""
        scope = self.enclosing_scope(log)
        for statement in ast.walk(scope):
            if isinstance(statement, _SIMPLE) and not any(n is log for n in ast.walk(statement)) and any(
                    isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)
                    for n in ast.walk(statement)):  # fmt: skip
                return statement
        return None

    def _only_argument(self, call: ast.Call) -> ast.AST | None:
        """The tensor a one-tensor call works on: ``torch.log(x)``'s ``x``, ``x.log()``'s."""
        if len(call.args) == 1 and not call.keywords and self.callee(call):
            return call.args[0]
        if not call.args and isinstance(call.func, ast.Attribute) and not self.callee(call):
            return call.func.value
        return None

    def _is_call_of(self, expr: ast.AST, functions: frozenset[str]) -> bool:
        if not isinstance(expr, ast.Call):
            return False
        names = self.callee(expr) or {f"torch.Tensor.{method_name(expr)}"}
        return bool(names & functions) and self._only_argument(expr) is not None

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Mult) and not self._in_gradient_formula(node):
            self._silu(node, node.left, node.right)

    def _in_gradient_formula(self, node: ast.AST) -> bool:
        """Inside a hand-written derivative (an autograd.Function's ``backward``, Bloom's
        ``bloom_gelu_back``): the formula is the gradient, not the activation."""
        scope = self.enclosing_scope(node)
        name = getattr(scope, "name", "")
        return bool(_GRADIENT.search(name))

    def _is_sigmoid(self, call: ast.Call) -> bool:
        names = self.callee(call) or {f"torch.Tensor.{method_name(call)}"}
        if not names & SIGMOID:
            return False
        return len(call.args) == 1 if "torch.Tensor.sigmoid" not in names else not call.args

    def _erf_gelu(self, call: ast.Call) -> bool:
        """``erf(x / sqrt(2))`` (or ``x * 0.7071...``) whose ``x`` also multiplies the result
        in the same expression: ``0.5 * x * (1 + erf(x / sqrt(2)))``."""
        argument = call.args[0] if call.args else getattr(call.func, "value", None)
        if not isinstance(argument, ast.BinOp):
            return False
        if isinstance(argument.op, ast.Div):
            scaled, by = argument.left, argument.right
            root_two = self._is_sqrt_two(by) or _is_number(by, math.sqrt(2.0))
        elif isinstance(argument.op, ast.Mult):
            scaled, by = argument.left, argument.right
            if _is_number(scaled, math.sqrt(0.5)):
                scaled, by = by, scaled
            root_two = _is_number(by, math.sqrt(0.5))
        else:
            return False
        return root_two and self._multiplied_by(call, ast.dump(scaled))

    def _tanh_gelu(self, call: ast.Call) -> bool:
        """``tanh(c * (x + 0.044715 * x**3))`` whose ``x`` also multiplies the result in the same
        expression: ``0.5 * x * (1 + tanh(...))`` (without it, ``0.5 * (1 + tanh(...))`` is the
        normal CDF's approximation, which no fused kernel computes)."""
        argument = call.args[0] if call.args else getattr(call.func, "value", None)
        for inner in ast.walk(argument) if argument is not None else ():
            if isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Add):
                for value, other in ((inner.left, inner.right), (inner.right, inner.left)):
                    if _has_constant(other, 0.044715) and not _has_constant(value, 0.044715):
                        if self._multiplied_by(call, ast.dump(value)):
                            return True
        return False

    def _multiplied_by(self, call: ast.AST, wanted: str) -> bool:
        """``wanted`` (an ``ast.dump``) multiplies ``call``'s result in the expression around it."""
        node = self.parent(call)
        while isinstance(node, ast.BinOp | ast.UnaryOp):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
                if wanted in (ast.dump(node.left), ast.dump(node.right)) or any(
                    isinstance(side, ast.BinOp) and wanted in (ast.dump(side.left),
                                                                ast.dump(side.right))
                    for side in (node.left, node.right)
                ):  # fmt: skip
                    return True
            node = self.parent(node)
        return False

    def _is_sqrt_two(self, expr: ast.AST) -> bool:
        return (
            isinstance(expr, ast.Call)
            and bool(self.callee(expr) & _SQRT)
            and len(expr.args) == 1
            and _is_number(expr.args[0], 2.0)
        )


def _is_number(expr: ast.AST, value: float) -> bool:
    return (
        isinstance(expr, ast.Constant)
        and isinstance(expr.value, int | float)
        and not isinstance(expr.value, bool)
        and abs(float(expr.value) - value) < 1e-3
    )


def _has_constant(node: ast.AST, value: float) -> bool:
    return any(_is_number(inner, value) for inner in ast.walk(node))


def _message(what: str, node: ast.AST, visitor: RuleVisitor, fused: str) -> str:
    return (
        f"hand-written {what} (`{visitor.code_of(node)}`): {fused} computes the same function "
        "in one fused kernel forward and backward, without the elementwise passes over the "
        "activation and the intermediates saved for backward"
    )

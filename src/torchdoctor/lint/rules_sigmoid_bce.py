"""TD510: a sigmoid's output fed to binary cross-entropy.

``F.binary_cross_entropy(torch.sigmoid(x), y)`` (the sigmoid also as ``x.sigmoid()``,
``F.sigmoid``, ``torch.special.expit``, ``nn.Sigmoid()(x)``, or a name or ``self`` attribute
bound to ``nn.Sigmoid()``; the loss also as ``nn.BCELoss()(...)`` or a ``criterion`` assigned
``nn.BCELoss(...)`` in the function, the module or the class; directly, through a kept-values
method such as ``.squeeze()``, clamped, or through a local name assigned only that sigmoid) runs
the sigmoid and the loss as separate kernels, forward and backward, and keeps the sigmoid's
output for the backward, where ``F.binary_cross_entropy_with_logits(x, y)`` (``nn.BCEWithLogits
Loss``) is one fused kernel computed from the logits with the log-sum-exp trick: measured 2.8x
to 3.3x faster forward + backward on a CPU (``torchdoctor bench fused``). It is also the stable
form (``binary_cross_entropy`` clamps its log at -100 where the sigmoid saturates, so a confident
wrong prediction stops contributing gradient) and the one allowed under CUDA autocast, where
``F.binary_cross_entropy`` raises "unsafe to autocast".

A file that builds an ``nn.BCELoss`` and defines a model ending in a sigmoid (an
``nn.Sigmoid()`` last in an ``nn.Sequential``, or a ``forward`` returning a sigmoid: a GAN
discriminator, pytorch/examples dcgan and siamese_network, PyTorch-GAN) gets the finding where
the loss is built, unless a loss call in it takes a sigmoid directly (that call is reported).

Not reported: binary cross-entropy of anything else (probabilities made elsewhere, a parameter
of the function: the runtime profile names those, ``F.binary_cross_entropy[sigmoid]``), a
sigmoid in the second argument (the target), ``binary_cross_entropy_with_logits``, and a name
also assigned something other than the sigmoid or modified in place.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.rules_softmax import SoftmaxRules, _unwrap
from torchdoctor.lint.visitor import dotted, keyword, method_name

RULES = (
    Rule(
        "TD510",
        "sigmoid-then-bce",
        "warning",
        "a sigmoid's output passed to binary_cross_entropy / nn.BCELoss: two kernels forward "
        "and backward, the sigmoid kept for backward, a log clamped at -100 where it saturates, "
        "and an error under CUDA autocast",
        "pass the logits to F.binary_cross_entropy_with_logits / nn.BCEWithLogitsLoss: one "
        "fused, numerically stable kernel (2.8-3.3x faster forward + backward on a CPU), "
        "allowed under autocast",
        "loss = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), target)",
        "loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)",
    ),
)

_SIGMOID = frozenset(
    {"torch.sigmoid", "torch.nn.functional.sigmoid", "torch.special.expit",
     "torch.Tensor.sigmoid"}
)  # fmt: skip
_SIGMOID_MODULE = frozenset({"torch.nn.Sigmoid", "torch.nn.modules.activation.Sigmoid"})
_BCE = frozenset({"torch.nn.functional.binary_cross_entropy"})
_BCE_MODULE = frozenset({"torch.nn.BCELoss", "torch.nn.modules.loss.BCELoss"})
#: classes whose sigmoid output is an image (a generator's, a decoder's), cited last
_GENERATOR = re.compile(r"gen|decod", re.IGNORECASE)
_SEQUENTIAL = frozenset({"torch.nn.Sequential", "torch.nn.modules.container.Sequential"})


class SigmoidBceRules(SoftmaxRules):
    """TD510 (see the module docstring): :class:`SoftmaxRules`' reading of where probabilities
    come from, with the sigmoid as their maker and binary cross-entropy as their reader.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\nimport torch.nn.functional as F\\n"
        ...        "def loss(logits, y):\\n    p = torch.sigmoid(logits)\\n"
        ...        "    return F.binary_cross_entropy(p, y)\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(5, 'TD510')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"binary_cross_entropy|BCELoss",),)  # (the sigmoid may be in another file)
    SOURCES, SOURCE_MODULES, SOURCE_METHOD = _SIGMOID, _SIGMOID_MODULE, "sigmoid"
    METHOD_NEEDS_ARGUMENTS = False

    def visit_Call(self, node: ast.Call) -> None:
        if self.callee(node) & _BCE_MODULE:  # nn.BCELoss(...) built: a model ending in one?
            self._check_construction(node)
            return
        found = self._sigmoid_input(node)
        if found is None:
            self._check_imported_model_output(node)
            return
        sigmoid, _, via = found
        logits = self._logits_of(sigmoid) or "the logits"
        what = f" (`{via.id}` = `{self.code_of(sigmoid)}`, line {sigmoid.lineno})" if via else ""
        module = not (self.callee(node) & _BCE)
        fused = "nn.BCEWithLogitsLoss" if module else "F.binary_cross_entropy_with_logits"
        self.report(
            node,
            "TD510",
            f"`{self.code_of(node)}`{what} passes a sigmoid's output to binary cross-entropy: "
            "two kernels forward and backward and the sigmoid kept for the backward, where "
            f"`{fused}` on the logits (`{logits}`) is one fused kernel (2.8-3.3x faster "
            "forward + backward on a CPU), stable where the sigmoid saturates (the log is "
            "clamped at -100 there), and allowed under CUDA autocast, where "
            "binary_cross_entropy raises",
        )

    def _sigmoid_input(self, node: ast.Call) -> tuple[ast.Call, Any, ast.Name | None] | None:
        """``(sigmoid call, eps, name it went through)`` when ``node`` is a binary cross-entropy
        of a sigmoid's output in the same function, else None."""
        argument = node.args[0] if node.args else keyword(node, "input")
        if argument is None or not self._is_loss(node, _BCE, _BCE_MODULE):
            return None
        if isinstance(argument, ast.Name):  # (DLRM's probs = torch.sigmoid(x).clamp(eps, 1 - eps))
            value = self._only_value(argument, node)
            if value is not None and _unclamped(value) is not value:
                found = self._softmax_value(_unclamped(value), node, eps_allowed=True)
                return None if found is None else (found[0], found[1], argument)
        return self._softmax_value(_unclamped(argument), node, eps_allowed=True)

    def _check_imported_model_output(self, node: ast.Call) -> None:
        """``strong, weak = self.model(x)`` then ``self.bce(strong, y)``, where the model's
        class is defined in another file of the project and its ``forward`` returns a sigmoid
        in that place (``return torch.sigmoid(self.head(h)), ...``)."""
        argument = node.args[0] if node.args else keyword(node, "input")
        project = self.context.project
        if not isinstance(argument, ast.Name) or project is None or not self._is_loss(
                node, _BCE, _BCE_MODULE):  # fmt: skip
            return
        bound = _bound_from_call(self.enclosing_scope(node), argument.id)
        if bound is None:
            return
        call, index = bound
        makers = self._values_of(call.func, call) if isinstance(
            call.func, ast.Name | ast.Attribute) else []  # fmt: skip
        classes = {(dotted(m.func) or "").rsplit(".", 1)[-1] for m in makers if isinstance(m, ast.Call)}
        if len(classes) != 1 or not all(isinstance(m, ast.Call) for m in makers):
            return
        name = classes.pop()
        tree = self.context.tree
        if tree is None or any(isinstance(c, ast.ClassDef) and c.name == name for c in tree.body):
            return  # (a model of this file: _check_construction's case)
        cls = project.module_class(name)
        forward = next((f for f in cls.body if isinstance(f, ast.FunctionDef)
                        and f.name == "forward"), None) if cls is not None else None  # fmt: skip
        outputs = [_returned_at(forward, r, index) for r in ast.walk(forward)
                   if isinstance(r, ast.Return)] if forward is not None else []  # fmt: skip
        if not outputs or not all(_is_a_sigmoid_call(o) for o in outputs):
            return
        shown = ast.unparse(outputs[0])  # type: ignore[arg-type]
        self.report(
            node,
            "TD510",
            f"`{self.code_of(node)}` takes `{argument.id}`, which `{name}.forward` returns as "
            f"`{shown}` (line {outputs[0].lineno}): a sigmoid's output fed to binary "  # type: ignore[union-attr]
            "cross-entropy, two kernels forward and backward and the sigmoid kept for the "
            "backward; return the logits and use `nn.BCEWithLogitsLoss` (one fused kernel, "
            "2.8-3.3x faster forward + backward on a CPU, stable where the sigmoid saturates, "
            "allowed under CUDA autocast); apply the sigmoid where probabilities are needed",
        )

    def _check_construction(self, node: ast.Call) -> None:
        """``nn.BCELoss()`` in a file whose model ends in a sigmoid (the last module of an
        ``nn.Sequential``, or what a ``forward`` returns) and where no loss call is seen taking
        a sigmoid directly (that call is reported instead): a GAN discriminator's usual form."""
        tree = self.context.tree
        key = ("sigmoid-ended model", id(tree))
        if key not in self.context.cache:
            calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call)] if tree else []
            direct = any(self._sigmoid_input(c) is not None for c in calls)
            self.context.cache[key] = None if direct else self._sigmoid_output(tree, calls)
        where = self.context.cache[key]
        if where is None:
            return
        self.report(
            node,
            "TD510",
            f"`{self.code_of(node)}` and a model whose output is a sigmoid ({where}): if this "
            "loss takes that output (a GAN discriminator's usual form), drop the final sigmoid "
            "and use `nn.BCEWithLogitsLoss` on the logits: one fused kernel instead of two "
            "forward and backward (2.8-3.3x faster on a CPU), stable where the sigmoid "
            "saturates (BCELoss clamps its log at -100), and allowed under CUDA autocast, "
            "where BCELoss raises",
        )

    def _sigmoid_output(self, tree: ast.AST | None, calls: list[ast.Call]) -> str | None:
        """Where a model of the file ends in a sigmoid, as the message says it, or None; a
        discriminator's or classifier's first (a generator's or decoder's sigmoid makes images,
        which a reconstruction loss may take too: cited when there is no other)."""
        found: list[tuple[str, ast.AST]] = []
        for call in calls:
            if self.callee(call) & _SEQUENTIAL and call.args:
                last = call.args[-1]
                if isinstance(last, ast.Call) and self.callee(last) & _SIGMOID_MODULE:
                    found.append((f"`nn.Sigmoid()` ends the `nn.Sequential` at line "
                                  f"{call.lineno}", call))  # fmt: skip
        for function in ast.walk(tree) if tree is not None else ():
            if isinstance(function, ast.FunctionDef) and function.name == "forward":
                for ret in ast.walk(function):
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        value = _last_value(function, ret)
                        if isinstance(value, ast.Call) and self._is_softmax(value):
                            found.append((f"`forward` returns `{self.code_of(value)}`, line "
                                          f"{value.lineno}", value))  # fmt: skip
        makers = [text for text, node in found if _GENERATOR.search(self._class_of(node))]
        others = [text for text, _ in found if text not in makers]
        return (others or makers or [None])[0]

    def _class_of(self, node: ast.AST) -> str:
        """The name of the class ``node`` is defined in ('' outside classes)."""
        while node is not None and not isinstance(node, ast.ClassDef):
            node = self.parent(node)
        return node.name if isinstance(node, ast.ClassDef) else ""

    def _logits_of(self, call: ast.Call) -> str | None:
        """What the sigmoid was applied to: ``x`` of ``torch.sigmoid(x)``, ``x.sigmoid()``,
        ``nn.Sigmoid()(x)``, ``self.act(x)``."""
        if call.args:
            return self.code_of(call.args[0])
        if method_name(call) == "sigmoid":
            return self.code_of(call.func.value)  # type: ignore[attr-defined]
        return None


def _last_value(function: ast.FunctionDef, ret: ast.Return) -> ast.AST | None:
    """What ``return x`` returns: the value of the last plain assignment to ``x`` before it
    in ``function`` (``out = self.sigmoid(out); return out``), or the returned expression."""
    value = ret.value
    if not isinstance(value, ast.Name):
        return value
    last = None
    for stmt in ast.walk(function):
        if isinstance(stmt, ast.Assign) and stmt.lineno < ret.lineno and any(
            isinstance(t, ast.Name) and t.id == value.id for t in stmt.targets
        ):
            if last is None or stmt.lineno > last.lineno:
                last = stmt
    return last.value if last is not None else None


def _bound_from_call(scope: ast.AST, name: str) -> tuple[ast.Call, int | None] | None:
    """``(call, index)`` when ``name`` is bound once in ``scope``, by ``name = call`` (index
    None) or ``a, name = call`` (its position).

    Example:
        >>> fn = ast.parse("def f(m, x):\\n    s, w = m(x)\\n    return s").body[0]
        >>> call, index = _bound_from_call(fn, "w")
        >>> ast.unparse(call), index
        ('m(x)', 1)
    """
    found = []
    for stmt in ast.walk(scope):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else (
            [stmt.target] if isinstance(stmt, ast.AugAssign | ast.AnnAssign | ast.For) else [])
        for target in targets:
            if isinstance(target, ast.Name) and target.id == name:
                found.append((getattr(stmt, "value", None), None))
            elif isinstance(target, ast.Tuple):
                for k, element in enumerate(target.elts):
                    if isinstance(element, ast.Name) and element.id == name:
                        found.append((getattr(stmt, "value", None), k))
    if len(found) != 1 or not isinstance(found[0][0], ast.Call):
        return None
    return found[0]  # type: ignore[return-value]


def _returned_at(function: ast.FunctionDef, ret: ast.Return, index: int | None) -> ast.AST | None:
    """What ``ret`` returns at ``index`` of its tuple (the whole value for None), through the
    last assignment of a returned name before it."""
    value = ret.value
    if index is not None:
        if not (isinstance(value, ast.Tuple) and index < len(value.elts)):
            return None
        value = value.elts[index]
    value = _unwrap(value)  # type: ignore[arg-type]  # (strong.transpose(1, 2))
    if isinstance(value, ast.Name):
        value = _last_value(function, ast.Return(value=value, lineno=ret.lineno))
    return _unwrap(value) if value is not None else None


def _is_a_sigmoid_call(expr: ast.AST | None) -> bool:
    """``torch.sigmoid(x)``, ``F.sigmoid(x)``, ``x.sigmoid()`` (read in another file, by its
    text)."""
    if not isinstance(expr, ast.Call):
        return False
    if method_name(expr) == "sigmoid" and not expr.args:
        return True
    return (dotted(expr.func) or "") in {"torch.sigmoid", "F.sigmoid", "torch.special.expit",
                                         "torch.nn.functional.sigmoid"}  # fmt: skip


def _unclamped(expr: ast.AST) -> ast.AST:
    """``p`` of ``p.clamp(eps, 1 - eps)`` / ``torch.clamp(p, eps, 1 - eps)`` (a sigmoid kept
    off 0 and 1 is still the sigmoid's output); anything else as it is."""
    if isinstance(expr, ast.Call) and method_name(expr) in ("clamp", "clip"):
        receiver = expr.func.value  # type: ignore[attr-defined]
        if isinstance(receiver, ast.Name) and receiver.id == "torch" and expr.args:
            return expr.args[0]
        return receiver
    return expr

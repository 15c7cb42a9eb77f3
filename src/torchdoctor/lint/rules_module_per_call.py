"""TD513: a module with parameters built inside ``forward``, or in every step of a training loop.

``proj = nn.Linear(d, 10)`` in ``forward`` makes a new layer at every call: its weights are
drawn at random each time and never trained (the optimizer was given the parameters that
existed when it was built), and every call pays the allocation and the initialisation
(Kaiming-uniform draws of the whole weight). In a training loop, the same per step. Build the
module once in ``__init__`` (or before the loop) and call it.

Not reported: modules without parameters (``nn.ReLU()``, ``nn.Flatten()``: a small object
each call, nothing lost) and modules built in ``__init__``, builders, or loops that do not
train.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.per_step import PerStepCalls
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.tensors import FRAMEWORK_STEPS
from torchdoctor.lint.visitor import FOR, FUNCTIONS, RuleVisitor

RULES = (
    Rule(
        "TD513",
        "module-built-per-call",
        "warning",
        "a module with parameters (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.Parameter, ...) built "
        "inside forward or a training step: new random weights each call, never trained, and "
        "an allocation and initialisation every time",
        "build it once in __init__ and call it in forward",
        "import torch.nn as nn\n\nclass Head(nn.Module):\n    def forward(self, x):\n"
        "        return nn.Linear(64, 10)(x)",
        "import torch.nn as nn\n\nclass Head(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Linear(64, 10)\n\n    def forward(self, x):\n"
        "        return self.proj(x)",
    ),
)

#: torch.nn classes that own parameters (or are one)
_WITH_PARAMETERS = re.compile(
    r"^torch\.nn\.(modules\.\w+\.)?(Linear|Bilinear|LazyLinear|(Lazy)?Conv(Transpose)?[123]d|"
    r"(Lazy)?BatchNorm[123]d|SyncBatchNorm|LayerNorm|GroupNorm|RMSNorm|InstanceNorm[123]d|"
    r"Embedding|EmbeddingBag|RNN|LSTM|GRU|RNNCell|LSTMCell|GRUCell|MultiheadAttention|"
    r"Transformer(Encoder|Decoder)?(Layer)?|PReLU|Parameter)$"
)


class ModulePerCallRules(PerStepCalls, RuleVisitor):
    """TD513 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch.nn as nn\\nclass Head(nn.Module):\\n"
        ...        "    def forward(self, x):\\n        return nn.Linear(64, 10)(x)\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(4, 'TD513')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"def (forward|training_step)\(|\.backward\(", r"nn\.|Parameter\("),)

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        built = next((n for n in names if _WITH_PARAMETERS.match(n)), None)
        if built is None:
            return
        where = self._per_call(node)
        if where is None or self._kept_on_self(node):
            return
        short = built.rsplit(".", 1)[-1]
        self.report(
            node,
            "TD513",
            f"`{self.code_of(node)}` builds a new {short} {where}: its weights are drawn at "
            "random each time and never trained (the optimizer holds the parameters that "
            "existed when it was built), and each call pays the allocation and the "
            "initialisation: build it once in `__init__` (or before the loop) and call it",
        )

    def _kept_on_self(self, node: ast.Call) -> bool:
        """The new module is stored on the object (``self.bias = nn.Embedding(...)``, or
        through a name: ``new = nn.Embedding(...)``, then ``self.bias = new``): a lazy,
        one-time build that later calls reuse."""
        statement, child = self.parent(node), node
        while isinstance(statement, ast.Attribute) or (  # (nn.Linear(...).to(x.device))
                isinstance(statement, ast.Call) and statement.func is child):  # fmt: skip
            statement, child = self.parent(statement), statement
        if not isinstance(statement, ast.Assign):
            return False
        targets = [t for t in statement.targets]
        if any(isinstance(t, ast.Attribute) for t in targets):
            return self._conditional(statement)  # (unconditional: rebuilt every call anyway)
        names = {t.id for t in targets if isinstance(t, ast.Name)}
        scope = self.enclosing_scope(node)
        return any(
            isinstance(other, ast.Assign)
            and isinstance(other.value, ast.Name)
            and other.value.id in names
            and any(isinstance(t, ast.Attribute) for t in other.targets)
            for other in ast.walk(scope)
        )

    def _conditional(self, statement: ast.AST) -> bool:
        """``statement`` runs under a test in its function (``if self.proj is None:``, a
        shape check, a ``try``): a lazy build, not one per call."""
        scope, parent = self.enclosing_scope(statement), self.parent(statement)
        while parent is not None and parent is not scope:
            if isinstance(parent, ast.If | ast.Try | ast.IfExp):
                return True
            parent = self.parent(parent)
        return False

    def _per_call(self, node: ast.Call) -> str | None:
        """``on every call of Cls.forward`` / ``at every step of the training loop at line
        N``; None elsewhere."""
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, (*FOR, ast.While))]
        training = next(
            (lp for lp in loops if self.is_training_body(lp) and not _over_a_literal(lp)), None
        )
        if training is not None:
            return f"at every step of the training loop at line {training.lineno}"
        scope = self.enclosing_scope(node)
        owner = self.parent(scope) if isinstance(scope, FUNCTIONS) else None
        if (isinstance(scope, FUNCTIONS) and isinstance(owner, ast.ClassDef)
                and (scope.name == "forward" or scope.name in FRAMEWORK_STEPS)):  # fmt: skip
            return f"on every call of `{owner.name}.{scope.name}`"  # (Lightning's step too)
        if not loops and self.is_step_function(scope):  # (a train_step: backward and step)
            return f"on every call of the training step `{scope.name}`"  # type: ignore[attr-defined]
        if not loops and isinstance(scope, FUNCTIONS):  # (forward -> self.forward_features)
            return self.per_step_call(scope)
        return None


def _over_a_literal(loop: ast.AST) -> bool:
    """A loop over a literal list or tuple (``for device in ["cpu", "cuda"]``): a loop over
    configurations, as tests write, not over training steps.

    Example:
        >>> _over_a_literal(ast.parse("for d in ['a', 'b']:\\n    pass").body[0])
        True
    """
    return isinstance(loop, FOR) and isinstance(loop.iter, (ast.List, ast.Tuple))

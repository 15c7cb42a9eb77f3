"""TD104: a Jacobian or Hessian built one output at a time.

``torch.autograd.functional.jacobian(f, x)`` and ``hessian(f, x)`` default to
``vectorize=False``: they run one backward pass per output element (a Hessian: one per entry of
the gradient, each through a graph kept for it), a Python loop of small passes. With
``vectorize=True`` torch batches those passes with vmap into one; ``torch.func.jacrev`` /
``torch.func.hessian`` do the same. Measured (``python -m torchdoctor.benchmarks.jacobian_rows``,
suite ``fused``; tanh MLPs, one thread; BENCHMARKS.md): 3.6x to 11.6x faster, the gap growing
with the number of outputs.

Not reported: ``vectorize=True`` given, or any non-constant value (the script decides), or
``strategy="forward-mode"`` (it requires ``vectorize=True``: torch raises without it).
"""

from __future__ import annotations

import ast

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import RuleVisitor, constant

RULES = (
    Rule(
        "TD104",
        "jacobian-one-output-at-a-time",
        "info",
        "torch.autograd.functional.jacobian / hessian without vectorize=True: one backward pass "
        "per output element (a Python loop of small passes)",
        "pass vectorize=True (the passes batched with vmap), or use torch.func.jacrev / "
        "torch.func.hessian",
        "J = torch.autograd.functional.jacobian(f, x)",
        "J = torch.autograd.functional.jacobian(f, x, vectorize=True)",
    ),
)

#: the functions that loop over outputs unless vectorized
_BY_ROWS = {
    "torch.autograd.functional.jacobian": "Jacobian",
    "torch.autograd.functional.hessian": "Hessian",
}


class JacobianRules(RuleVisitor):
    """TD104 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("from torch.autograd.functional import hessian\\n"
        ...        "H = hessian(f, x)\\nH2 = hessian(f, x, vectorize=True)\\n")
        >>> [(f.code, f.line) for f in lint_source(src)]
        [('TD104', 2)]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"\b(jacobian|hessian)\b",),)

    def visit_Call(self, node: ast.Call) -> None:
        hit = self.callee(node) & _BY_ROWS.keys()
        if hit:
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            # (both take vectorize fifth: func, inputs, create_graph, strict, vectorize)
            vectorize = node.args[4] if len(node.args) > 4 else keywords.get("vectorize")
            strategy = keywords.get("strategy", keywords.get("outer_jacobian_strategy"))
            unvectorized = vectorize is None or constant(vectorize) is False
            forward_mode = strategy is not None and constant(strategy) == "forward-mode"
            if unvectorized and not forward_mode and not any(
                isinstance(a, ast.Starred) for a in node.args
            ) and not any(k.arg is None for k in node.keywords):  # (no *args / **kwargs)
                what = _BY_ROWS[min(hit)]
                self.report(
                    node,
                    "TD104",
                    f"`{self.code_of(node)}` builds the {what} one output element at a time "
                    "(vectorize=False, the default: one backward pass per element, in a Python "
                    "loop): pass vectorize=True to batch the passes with vmap, or use "
                    f"torch.func.{'jacrev' if what == 'Jacobian' else 'hessian'} (several "
                    "times faster on a small MLP, more with more outputs)",
                )

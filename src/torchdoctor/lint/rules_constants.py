"""TD511: a constant tensor built from a Python literal on every call or iteration.

``torch.tensor([0.485, 0.456, 0.406], device=x.device)`` in a ``forward``, inside a step loop
(it trains, or iterates a data loader or a sampler's time steps: not a loop over test cases or
devices), or in a function or method that a ``forward`` of the file or a step loop of the
project calls (pytorch/examples fast_neural_style's
``normalize_batch``: ``batch.new_tensor([0.485, 0.456, 0.406])`` twice per call, four calls per
step) allocates a tensor and, on a GPU, copies it from pageable host memory every time: a
blocking host-to-device copy and an allocation per call for a value that never changes (under
torch.compile, a constant rebuilt in the graph). Built once, as a buffer
(``self.register_buffer("mean", ...)`` in ``__init__``: it follows ``.to(device)`` and is saved
with the model) or a constant moved to the device before the loop, it costs nothing per step.

Only literals count: a list of numbers (nested lists and tuples, negative numbers included),
two or more of them; a tensor built from variables is data, not a constant.
"""

from __future__ import annotations

import ast

from torchdoctor.lint.project import step_loop
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import FOR, FUNCTIONS, RuleVisitor, method_name

RULES = (
    Rule(
        "TD511",
        "constant-tensor-per-call",
        "info",
        "a constant tensor built from a Python literal (torch.tensor([0.485, 0.456, 0.406])) "
        "in a forward, a step loop (over a loader's batches, a sampler's time steps, or one "
        "calling backward or step), or a function a forward or such a loop calls: an allocation "
        "and, on a GPU, a blocking host-to-device copy on every call for a value that never "
        "changes",
        "build it once: self.register_buffer('mean', torch.tensor([...])) in __init__ (it "
        "follows .to(device)), or a constant moved to the device before the loop",
        "class Norm(nn.Module):\n    def forward(self, x):\n"
        "        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device)\n"
        "        return x - mean.view(-1, 1, 1)",
        "class Norm(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1))\n"
        "    def forward(self, x):\n        return x - self.mean",
    ),
)

#: calls that build a tensor from their first argument's data
_BUILDERS = frozenset(
    {"torch.tensor", "torch.as_tensor", "torch.Tensor", "torch.FloatTensor",
     "torch.LongTensor", "torch.DoubleTensor", "torch.IntTensor", "torch.BoolTensor",
     "torch.cuda.FloatTensor", "torch.cuda.LongTensor"}
)  # fmt: skip
_LOOPS = (*FOR, ast.While)


def numbers_in_literal(node: ast.AST) -> int:
    """How many numbers a literal list/tuple of numbers holds (nested, negatives included);
    0 when it holds anything else.

    Example:
        >>> numbers_in_literal(ast.parse("[[1, -2.5], (3, 4)]", mode="eval").body)
        4
        >>> numbers_in_literal(ast.parse("[x, 1]", mode="eval").body)
        0
    """
    if isinstance(node, (ast.List, ast.Tuple)):
        counts = [numbers_in_literal(e) for e in node.elts]
        return sum(counts) if counts and all(counts) else 0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return 1
    return 0


class ConstantRules(RuleVisitor):
    """TD511 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\nclass Norm(torch.nn.Module):\\n    def forward(self, x):\\n"
        ...        "        m = torch.tensor([0.5, 0.5, 0.5], device=x.device)\\n"
        ...        "        return x - m.view(-1, 1, 1)\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD511']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"[tT]ensor\(\s*[\[(]",),)

    def visit_Call(self, node: ast.Call) -> None:
        built = method_name(node) == "new_tensor" or bool(self.callee(node) & _BUILDERS)
        if not (built and node.args and numbers_in_literal(node.args[0]) >= 2):
            return
        where = self._per_call(node)
        if where is None:
            return
        self.report(
            node,
            "TD511",
            f"`{self.code_of(node)}` builds a constant tensor from a literal {where}: an "
            "allocation and, on a GPU, a blocking host-to-device copy each time for a value "
            "that never changes; build it once: `self.register_buffer(...)` in `__init__` (it "
            "follows `.to(device)`), or a constant moved to the device before the loop",
        )

    def _per_call(self, node: ast.Call) -> str | None:
        """Where it runs again and again: ``in every iteration of the loop at line N``, ``on
        every call of Cls.forward``, ``on every call of fn (called by Cls.forward)``, ``on
        every call of fn (called in a loop at file:line)``; None otherwise (module level,
        ``__init__``, a function run once)."""
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, _LOOPS)]
        steps = [lp for lp in loops if step_loop(lp)]
        if steps:
            return f"in every iteration of the loop at line {steps[-1].lineno}"
        if loops:
            return None  # (a loop over test cases, devices, a configuration: not per step)
        scope = self.enclosing_scope(node)
        if not isinstance(scope, FUNCTIONS):
            return None
        owner = self.parent(scope)
        if scope.name == "forward" and isinstance(owner, ast.ClassDef):
            return f"on every call of `{owner.name}.forward`"
        name = f"{owner.name}.{scope.name}" if isinstance(owner, ast.ClassDef) else scope.name
        forward = self._forward_calling(scope.name)
        if forward is not None:
            return f"on every call of `{name}` (called by `{forward}`)"
        project = self.context.project
        if isinstance(owner, (ast.Module, ast.ClassDef)) and project is not None:
            caller = project.called_in_loop(scope.name)  # type: ignore[attr-defined]
            if caller is not None:
                return (f"on every call of `{name}` (called in a loop at "
                        f"{caller[0]}:{caller[1]})")  # fmt: skip
        return None

    def _forward_calling(self, name: str) -> str | None:
        """``Cls.forward`` of this file that calls ``name(...)`` / ``self.name(...)``."""
        key = ("forward callees",)
        table = self.context.cache.get(key)
        if table is None:
            table = {}
            for cls in ast.walk(self.context.tree) if self.context.tree else ():
                if not isinstance(cls, ast.ClassDef):
                    continue
                for item in cls.body:
                    if isinstance(item, FUNCTIONS) and item.name == "forward":
                        for call in ast.walk(item):
                            if isinstance(call, ast.Call):
                                callee = method_name(call) or getattr(call.func, "id", None)
                                table.setdefault(callee, f"{cls.name}.forward")
            self.context.cache[key] = table
        return table.get(name)

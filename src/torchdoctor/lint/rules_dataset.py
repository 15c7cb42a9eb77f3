"""TD405: a Dataset's ``__getitem__`` moving each sample to the GPU.

``return self.x[i].to(self.device)`` in ``__getitem__`` copies every sample to the device on
its own (one small host-to-device copy per sample instead of one per batch), from pageable
memory, on the loading thread; with ``num_workers > 0`` the workers are forked processes, and
CUDA cannot be initialised in a forked process ("Cannot re-initialize CUDA in forked
subprocess"), so the pipeline cannot be parallelised at all. Return CPU tensors: the
DataLoader batches them, pins the batch (``pin_memory=True``) and the loop moves it once
(``batch.to(device, non_blocking=True)``).

Not reported: ``.to(dtype)`` conversions, ``.to("cpu")``, and classes without ``__getitem__``.
"""

from __future__ import annotations

import ast

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.rules_device import DeviceMoves
from torchdoctor.lint.visitor import FUNCTIONS, RuleVisitor, method_name

RULES = (
    Rule(
        "TD405",
        "device-copy-in-dataset",
        "warning",
        "a Dataset's __getitem__ moves each sample to the device (x.to(device), x.cuda()): one "
        "small copy per sample, and CUDA cannot run in forked DataLoader workers",
        "return CPU tensors; let the DataLoader batch and pin them (pin_memory=True) and move "
        "each batch once in the loop with .to(device, non_blocking=True)",
        "class Samples(Dataset):\n    def __getitem__(self, i):\n"
        "        return self.x[i].to(self.device)",
        "class Samples(Dataset):\n    def __getitem__(self, i):\n        return self.x[i]\n"
        "# in the loop: x = x.to(device, non_blocking=True)",
        seed="004",
    ),
)


class DatasetRules(DeviceMoves, RuleVisitor):
    """TD405 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("class Pairs:\\n    def __getitem__(self, i):\\n"
        ...        "        return self.x[i].to(self.device)\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(3, 'TD405')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"def __getitem__\(", r"\.cuda\(|\.to\("),)

    def visit_Call(self, node: ast.Call) -> None:
        if method_name(node) not in {"to", "cuda"} or not isinstance(node.func, ast.Attribute):
            return
        scope = self.enclosing_scope(node)
        if not (
            isinstance(scope, FUNCTIONS)
            and scope.name == "__getitem__"
            and isinstance(self.parent(scope), ast.ClassDef)
        ):
            return
        device = self._device(node)
        if device is None:
            return
        owner = self.parent(scope).name  # type: ignore[union-attr]
        self.report(
            node,
            "TD405",
            f"`{self.code_of(node)}` in `{owner}.__getitem__` copies each sample to {device} on "
            "its own (one small pageable copy per sample, on the loading thread), and DataLoader "
            "workers, forked processes, cannot use CUDA at all: return CPU tensors, pass "
            "pin_memory=True to the DataLoader, and move each batch once in the loop with "
            "`.to(device, non_blocking=True)`",
        )

    def _device(self, move: ast.Call) -> str | None:
        """How the call names its device (``the GPU``, ``"cuda"``, `` `self.device` ``), or
        None when it is a dtype conversion or the CPU."""
        found = self.device_of_move(move)
        if found is None:
            return None
        text, sure = found
        if text.strip("'\"").lower().startswith("cpu"):
            return None
        if move.func.attr == "cuda" and not move.args:  # type: ignore[attr-defined]
            return "the GPU"
        if isinstance(move.args[0] if move.args else None, ast.Constant):
            return text
        name = text.lower()
        return f"`{text}`" if sure or "cuda" in name or "gpu" in name or "rank" in name else None

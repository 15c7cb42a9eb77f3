"""A hot line whose time is a chain of elementwise ops: fuse them with torch.compile.

``deltaA = torch.exp(delta.unsqueeze(-1) * A)`` (mamba.py's selective scan on (B, L, ED, N)
tensors) runs a multiply and an exponential, each a pass over memory that reads its inputs and
writes a new tensor, forward and again in backward. Eager PyTorch cannot fuse them; torch.compile
turns the chain (and the elementwise lines around it) into one kernel that reads the inputs once.
A line is such a chain when its ops are elementwise ops holding most of its time (views such as
``unsqueeze`` cost nothing and may sit between them; a single broadcast multiply fuses with the
lines around it), in a function (torch.compile compiles functions, not a script's top level)
and outside a per-element loop (whose cure is batching). The speedup is the suite ``fused`` pair "elementwise
chain, eager vs torch.compile" (BENCHMARKS.md).

Example:
    >>> row = {"total_ms": {"median": 12.8}, "calls_per_step": 1, "top_ops": [
    ...     {"op": "Tensor.mul", "forward_ms": 1.4, "backward_ms": 5.6, "calls_per_step": 1},
    ...     {"op": "torch.exp", "forward_ms": 3.3, "backward_ms": 1.9, "calls_per_step": 1},
    ...     {"op": "Tensor.unsqueeze", "forward_ms": 0.01, "calls_per_step": 1}]}
    >>> fuse_cure(row).name
    'fuse the elementwise chain'
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Speedup, center
from torchdoctor.analyze.advice.cure import Cure

#: elementwise ops by the hot lines' names (``Tensor.mul`` for ``a * b``): one pass each (not
#: ``.to()``: a device copy is no arithmetic to fuse; nor a cast alone)
ELEMENTWISE = re.compile(
    r"^(Tensor|torch|F)\.(mul|add|sub|div|true_divide|neg|abs|pow|square|exp|exp2|expm1|log|"
    r"log1p|log2|sqrt|rsqrt|reciprocal|tanh|sigmoid|sign|clamp|clip|where|masked_fill|sin|cos|"
    r"erf|maximum|minimum|lerp|addcmul|addcdiv|silu|gelu|relu|softplus|leaky_relu|elu|"
    r"hardswish|mish)_?$"
)
#: ops that only view their input (no pass over memory)
VIEWS = re.compile(
    r"^(Tensor|torch)\.(unsqueeze|squeeze|view|reshape|expand|expand_as|transpose|permute|t|"
    r"__getitem__|view_as|flatten|unflatten|movedim|narrow|select|unbind|chunk|split)$"
)
#: the share of the line the elementwise ops hold before the chain is its cause
MIN_SHARE = 0.8
#: elementwise ops per execution (one fuses with the elementwise lines around it)
MIN_OPS = 1

FUSE_CHAIN = Cure(
    "fuse the elementwise chain",
    "elementwise ops, one pass over memory each: fuse them with torch.compile",
    "The line's time is elementwise ops (multiplies, adds, exponentials, activations): each "
    "reads its inputs and writes a new tensor of the full size, forward and again in backward, "
    "so on large tensors the cost is memory traffic, one pass per op. Eager PyTorch runs them "
    "one by one; torch.compile of the function the line is in (or of the module) fuses them, "
    "with the elementwise lines around it, into one kernel that reads the inputs once. "
    "`torchdoctor tune SCRIPT` measures compile on your own step (its first steps pay the "
    "compile time).",
    Speedup(
        1.10,
        1.78,
        "suite fused: an elementwise chain (exp of a broadcast multiply, two more multiplies, "
        "its output kept) eager vs torch.compile, forward + backward, 1.10x at (4, 32, 32, 8) "
        "to 1.78x at (8, 128, 128, 16) on a CPU (medians of three runs)",
    ),
    ("torch.compile",),
    "deltaA = torch.exp(delta.unsqueeze(-1) * A)   # before: a pass per op\n"
    "@torch.compile                                # after: one fused kernel\n"
    "def selective_scan(self, x, delta, A, B, C, D): ...",
    cause="torch.compile",
)


def fuse_cure(row: Mapping[str, Any]) -> Cure | None:
    """:data:`FUSE_CHAIN` when the line, in a function, runs :data:`MIN_OPS` or more elementwise
    ops per execution holding :data:`MIN_SHARE` of its time, its other ops views only; else None.

    Example:
        >>> fuse_cure({"total_ms": {"median": 8.0}, "calls_per_step": 1, "top_ops": [
        ...     {"op": "Tensor.matmul", "forward_ms": 6.0, "calls_per_step": 1},
        ...     {"op": "Tensor.mul", "forward_ms": 1.0, "calls_per_step": 1}]}) is None
        True
    """
    if row.get("function") == "<module>":
        return None  # (a script's top level: no function to compile)
    total = center(row.get("total_ms"))
    executions = max(1.0, float(row.get("calls_per_step") or 0.0))
    ops = row.get("top_ops") or ()
    chain = [op for op in ops if ELEMENTWISE.match(str(op.get("op")))]
    if total <= 0 or any(
        not ELEMENTWISE.match(str(op.get("op"))) and not VIEWS.match(str(op.get("op")))
        for op in ops
    ):
        return None
    count = sum(float(op.get("calls_per_step") or 0.0) for op in chain) / executions
    spent = sum(float(op.get("forward_ms") or 0.0) + float(op.get("backward_ms") or 0.0)
                for op in chain)  # fmt: skip
    if count < MIN_OPS or spent < MIN_SHARE * total:
        return None
    code, function = str(row.get("code") or "").strip(), str(row.get("function") or "")
    if not code or not function.isidentifier():
        return FUSE_CHAIN
    return dataclasses.replace(  # the snippet of this line and its function, not mamba's
        FUSE_CHAIN,
        code=f"{code}   # before: a pass per op\n"
        f"@torch.compile   # after: one fused kernel for the function the line is in\n"
        f"def {function}(...): ...",
    )

"""A hot line in a loop whose time is the backward of the slices it takes per iteration.

Indexing a tensor that requires grad at the loop variable (``deltaA[:, t]`` for each ``t``: a
hand-written scan, an RNN run over time steps) records one select per iteration. The backward
of each writes a zero tensor the size of the whole tensor and copies the slice's gradient into
it, and autograd adds those full-size gradients up: n iterations cost n passes over the whole
tensor. Taking the slices once before the loop (``deltaA.unbind(1)``) records one node whose
backward is a single stack. The hot lines time this as the line's ``Tensor.__getitem__`` (or
``select``) backward; when it is half of the line or more, the cure is to unbind once, and the
saving is that measured backward less one pass (1/n of it) per iteration count (lint TD307
finds the pattern in the source).

Example:
    >>> row = {"total_ms": {"median": 150.0}, "calls_per_step": 128, "top_ops": [
    ...     {"op": "Tensor.__getitem__", "forward_ms": 2.0, "backward_ms": 113.0,
    ...      "calls_per_step": 256}]}
    >>> round(unbind_cure(row).speedup.low, 2)
    3.96
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Speedup, center
from torchdoctor.analyze.advice.cure import Cure, removing_share

#: ops that take one slice of a tensor (the hot lines' names)
SLICING_OPS = frozenset(
    {"Tensor.__getitem__", "Tensor.select", "torch.select", "Tensor.narrow", "torch.narrow"}
)
#: the share of the line the slices' backward needs before it is the cause
MIN_SHARE = 0.5
#: executions per step (per owner) before the line is a loop over slices
MIN_ITERATIONS = 8

UNBIND_ONCE = Cure(
    "unbind once",
    "slices taken per iteration: unbind the tensor once before the loop",
    "Each `x[:, t]` of a tensor that requires grad has a backward that writes a zero gradient "
    "the size of all of x and copies the slice's gradient into it, and autograd adds the n "
    "full-size gradients up: n passes over x for one pass of work. Take the slices once before "
    "the loop, `xs = x.unbind(1)` (then `for t, x_t in enumerate(xs)`, or index the tuple: "
    "`xs[t]`); its backward is one stack. The values and gradients are the same.",
    Speedup(1.0, 1.0, "set per line from the slices' measured backward"),
    ("TD307", "torch.Tensor.unbind"),
    "for t in range(L):                      # before\n"
    "    h = deltaA[:, t] * h + BX[:, t]\n"
    "for a_t, b_t in zip(deltaA.unbind(1), BX.unbind(1)):   # after\n"
    "    h = a_t * h + b_t",
    basis="measured",
)


def unbind_cure(row: Mapping[str, Any]) -> Cure | None:
    """:data:`UNBIND_ONCE` with the speedup of removing the line's slice backward but one pass
    per iteration count, when that backward is :data:`MIN_SHARE` of the line or more and the
    line runs :data:`MIN_ITERATIONS` times or more per step and owner; else None.

    Example:
        >>> unbind_cure({"total_ms": {"median": 10.0}, "calls_per_step": 64, "top_ops": [
        ...     {"op": "Tensor.mul", "forward_ms": 2.0, "backward_ms": 8.0}]}) is None
        True
    """
    total = center(row.get("total_ms"))
    owners = max(1, len(row.get("owners") or ()))
    iterations = float(row.get("calls_per_step") or 0.0) / owners
    spent = sum(
        float(op.get("backward_ms") or 0.0)
        for op in row.get("top_ops") or ()
        if str(op.get("op")) in SLICING_OPS
    )
    if total <= 0 or iterations < MIN_ITERATIONS or spent < MIN_SHARE * total:
        return None
    saved = spent * (1.0 - 1.0 / iterations)
    return removing_share(
        UNBIND_ONCE,
        saved / total,
        f"the slices' backward, measured: {spent / total:.0%} of the line's time, of which one "
        f"pass in {iterations:.0f} stays",
    )

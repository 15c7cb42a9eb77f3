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

from torchdoctor.analyze.advice.base import Speedup, center, walk
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


def unattributed_backward(session: Mapping[str, Any], owners: Any) -> float:
    """The backward of the modules owning a line (their own, children left out) that no
    measured line of theirs holds, per step: where autograd sums the full-size gradients of a
    tensor sliced per iteration (the sums run between graph nodes, where no line's hooks see
    them). The unbind cure removes those sums too: mamba-minimal's scan, its slicing line
    stated 119 ms with the mixers' (self) backward at 439 ms of which the lines held 215;
    unbound, the step fell from 681 to 203 ms and the backward from 456 to 117.

    Example:
        >>> tree = {"path": "", "children": [{"path": "mixer", "kind": "module",
        ...         "backward_self_ms": {"mean": 40.0}}]}
        >>> lines = [{"owner": "mixer", "backward_ms": {"mean": 15.0}},
        ...          {"owner": "mixer", "backward_ms": {"mean": 5.0}}]
        >>> unattributed_backward({"tree": tree, "hot_lines": {"lines": lines}}, ["mixer"])
        20.0
    """
    nodes = {str(n.get("path") or ""): n for n, _ in walk(session.get("tree"))
             if n.get("kind") == "module"}  # fmt: skip
    held: dict[str, float] = {}
    for line in (session.get("hot_lines") or {}).get("lines") or ():
        owner = str(line.get("owner") or "")
        held[owner] = held.get(owner, 0.0) + center(line.get("backward_ms"))
    total = 0.0
    for owner in dict.fromkeys(str(o) for o in owners or ()):
        node = nodes.get(owner)
        if node is not None:
            total += max(0.0, center(node.get("backward_self_ms")) - held.get(owner, 0.0))
    return total

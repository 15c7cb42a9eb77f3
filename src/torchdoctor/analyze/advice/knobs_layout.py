"""channels_last's CPU bound by kind of convolution: depthwise, grouped and 1x1 ones gain more
than the usual bound in channels_last on a CPU (suite ``fused``'s ``conv_layouts``); the
recorder's ``conv`` facts on the tree's convolution nodes say which they are.

Example:
    >>> sorted(name for _, name, _ in _LAYOUT_KINDS)
    ['1x1', 'depthwise', 'grouped']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import SPEEDUPS, Advice, center, fmt_ms, walk

#: 2-d and 3-d convolutions: the module types channels_last changes (not Conv1d, and not
#: GPT-2's ``Conv1D``, which is a linear layer)
CONV_ND = re.compile(r"^(Lazy)?Conv(Transpose)?[23]d$")

#: the convolutions whose CPU gain in channels_last exceeds the usual bound: (which, by their
#: ``conv`` facts; their name in the evidence; their SPEEDUPS key)
_LAYOUT_KINDS = (
    (lambda conv: conv.get("groups") and conv.get("groups") == conv.get("in_channels"),
     "depthwise", "channels_last_cpu_depthwise"),
    (lambda conv: conv.get("groups") and conv.get("groups") != conv.get("in_channels"),
     "grouped", "channels_last_cpu_grouped"),
    (lambda conv: conv.get("pointwise"), "1x1", "channels_last_cpu_pointwise"),
)  # fmt: skip


def layout_kinds_bound(item: Advice, session: Mapping[str, Any], scale: float) -> None:
    """Raise a CPU channels_last advice's bound for its depthwise, grouped and 1x1
    convolutions (the tree's convolutions whose ``conv`` facts say so: up to their own
    SPEEDUPS entry on them, where the others get ``channels_last_cpu``); ``scale``: the
    step's share left without the profiler.

    Example:
        >>> conv = {"type": "Conv2d", "path": "dw", "total_ms": {"mean": 24.0}, "children": [],
        ...         "conv": {"groups": 72, "in_channels": 72}}
        >>> item = Advice("engine-knobs", "t", saving_range_ms=[0.0, 5.5],
        ...               evidence=["convs", "up to 1.3x"])
        >>> layout_kinds_bound(item, {"tree": {"children": [conv]}}, 1.0)
        >>> round(item.saving_range_ms[1], 1), item.evidence[2].split(" (")[0]
        (14.4, 'up to 2.5x on its 1 depthwise convolution')
    """
    convs = [n for n, _ in walk(session.get("tree"))
             if not n.get("children") and CONV_ND.match(str(n.get("type") or ""))]
    usual = SPEEDUPS["channels_last_cpu"]
    at = 2
    for kind, name, key in _LAYOUT_KINDS:
        nodes = [n for n in convs if kind(n.get("conv") or {})]
        ms = sum(center(n.get("total_ms")) for n in nodes)
        if ms <= 0 or not item.saving_range_ms:
            continue
        high = SPEEDUPS[key]
        more = ms * scale * ((1 - 1 / high.high) - (1 - 1 / usual.high))
        item.saving_range_ms = [item.saving_range_ms[0], item.saving_range_ms[1] + more]
        plural = "s" if len(nodes) > 1 else ""
        item.evidence.insert(at, f"up to {high.high:g}x on its {len(nodes)} {name} "
                                 f"convolution{plural} ({fmt_ms(ms)} a step: {high.source})")  # fmt: skip
        at += 1

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


#: the share of its bound a CPU channels_last advice ranks by (``Advice.bound_realized``), by
#: kind of run, from client runs' interleaved A/Bs (measured saving / stated bound): an
#: inference run 1.0 in three of three (timm validate 304 ms of 269, timm inference.py
#: resnet18 258 of 257, deep-person-reid's OSNet test 221 of 176); a training run whose
#: convolutions are mostly depthwise or grouped 0.8-1.0 (torchvision mobilenet_v3_small 585 of
#: 401, OSNet 305 of 376). A training run of dense convolutions measured 0 in four of five
#: (DETR, timm benchmark.py, a siamese ResNet-18, an MNIST CNN; fast_neural_style 1.16x): no
#: share, ranked by a tenth of its bound
LAYOUT_REALIZED = {"inference": 0.8, "depthwise": 0.7}
#: the share of the convolutions' time in depthwise or grouped ones that makes a run "depthwise"
DEPTHWISE_SHARE = 0.25
#: why a GroupNorm net's channels_last bound ranks by a tenth
GROUP_NORM_NOTE = (
    "its normalisation is GroupNorm: diffusion U-Nets of GroupNorm measured no gain in "
    "channels_last on a CPU (lucidrains' denoising-diffusion-pytorch 0.85x and 1.0x, "
    "torchcfm's 0.99x), so this bound ranks with the generic knobs"
)


def layout_realized(item: Advice, session: Mapping[str, Any], backward: bool) -> None:
    """Set a CPU channels_last advice's ``bound_realized`` by the kind of run (see
    :data:`LAYOUT_REALIZED`); a GroupNorm net gets none, and the evidence says why.

    Example:
        >>> dw = {"type": "Conv2d", "total_ms": {"mean": 6.0}, "conv": {"groups": 8, "in_channels": 8}}
        >>> dense = {"type": "Conv2d", "total_ms": {"mean": 9.0}}
        >>> item = Advice("engine-knobs", "channels_last")
        >>> layout_realized(item, {"tree": {"children": [dw, dense]}}, backward=True)
        >>> item.bound_realized
        0.7
        >>> layout_realized(item, {"tree": {"children": [dense]}}, backward=True)
        >>> item.bound_realized is None
        True
    """
    item.bound_realized = None
    nodes = [n for n, _ in walk(session.get("tree"))]
    if any(str(n.get("type") or "").startswith("GroupNorm") for n in nodes):
        item.evidence.append(GROUP_NORM_NOTE)
        return
    if not backward:
        item.bound_realized = LAYOUT_REALIZED["inference"]
        return
    convs = [n for n in nodes if not n.get("children") and CONV_ND.match(str(n.get("type") or ""))]
    total = sum(center(n.get("total_ms")) for n in convs)
    grouped = sum(center(n.get("total_ms")) for n in convs if (n.get("conv") or {}).get("groups"))
    if total > 0 and grouped >= DEPTHWISE_SHARE * total:
        item.bound_realized = LAYOUT_REALIZED["depthwise"]

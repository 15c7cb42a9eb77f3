"""The bound of CPU bf16 autocast (rule ``engine-knobs`` on a CPU with bf16 units: AVX512-BF16 /
AMX): what the bfloat16 units speed up is split into its matrix multiplies (linear layers, and
the ``q @ k.transpose(-2, -1)`` / ``attn @ v`` of a hand-written attention, measured on the hot
lines) and the rest of the kernels autocast changes (convolutions, recurrent cells), each with
its own measured bound: a matmul up to ``SPEEDUPS["bf16_autocast_cpu_matmul"]`` (3.5x), a
convolution up to ``SPEEDUPS["bf16_autocast_cpu_conv"]`` (2.5x: pytorch/examples
super_resolution's step went 2.5x, told "up to 124 ms" at 1.45x), the rest up to
``SPEEDUPS["bf16_autocast_cpu"]`` (1.45x), and where there are matmuls, the rest of the
forward + backward (the activations that take their bfloat16 outputs) at 1.45x. One bound of 1.45x over the modules alone told
facebookresearch/dino's vit_tiny step "up to 386 ms": autocast took it from 2,329 to 1,181 ms
(interleaved A/B, round 11).

Example:
    >>> tree = {"children": [{"type": "Linear", "total_ms": {"mean": 60.0}},
    ...                      {"type": "Conv2d", "total_ms": {"mean": 30.0}}]}
    >>> lines = {"lines": [{"top_ops": [{"op": "Tensor.matmul", "forward_ms": 6.0,
    ...                                  "backward_ms": 4.0}]}]}
    >>> bf16_parts({"tree": tree, "hot_lines": lines}, kernels=90.0, compute=200.0)
    (100.0, 70.0, 30.0)
    >>> round(bf16_bound(100.0, 70.0, others=100.0), 3)
    90.345
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import SPEEDUPS, center, walk

#: modules whose kernel is a matrix multiply
_MATMUL_MODULE = re.compile(
    r"^(Lazy)?(Linear|Bilinear|NonDynamicallyQuantizableLinear|Conv1D|MultiheadAttention)$"
)
#: modules whose kernel is a convolution
_CONV_MODULE = re.compile(r"^(Lazy)?Conv(Transpose)?[123]d$")
#: torch calls (as the hot lines name them) that are a matrix multiply
MATMUL_OPS = frozenset({
    "Tensor.matmul", "torch.matmul", "Tensor.__matmul__", "Tensor.__rmatmul__", "torch.bmm",
    "Tensor.bmm", "torch.mm", "Tensor.mm", "torch.einsum", "torch.baddbmm", "Tensor.baddbmm",
    "F.linear", "torch.nn.functional.linear",
})  # fmt: skip


def matmul_line_ms(session: Mapping[str, Any]) -> float:
    """ms per step (forward + backward) of the matrix multiplies the measured source lines call
    outside any linear layer (a hand-written attention's two products).

    Example:
        >>> matmul_line_ms({"hot_lines": {"lines": [{"top_ops": [
        ...     {"op": "Tensor.matmul", "forward_ms": 2.0, "backward_ms": 1.0},
        ...     {"op": "Tensor.softmax", "forward_ms": 5.0}]}]}})
        3.0
    """
    lines = (session.get("hot_lines") or {}).get("lines") or ()
    return sum(
        float(op.get("forward_ms") or 0.0) + float(op.get("backward_ms") or 0.0)
        for line in lines if isinstance(line, Mapping)
        for op in line.get("top_ops") or () if op.get("op") in MATMUL_OPS
    )  # fmt: skip


def outermost_ms(session: Mapping[str, Any], types: re.Pattern[str]) -> float:
    """ms per step in the outermost modules whose type ``types`` matches (a match's children
    are not counted again).

    Example:
        >>> tree = {"children": [{"type": "Linear", "total_ms": {"mean": 4.0}},
        ...                      {"type": "Seq", "children": [{"type": "Linear", "total_ms": 2.0}]}]}
        >>> outermost_ms({"tree": tree}, re.compile("Linear$"))
        6.0
    """

    def outermost(node: Mapping[str, Any]) -> float:
        if types.match(str(node.get("type") or "")):
            return center(node.get("total_ms"))
        return sum(outermost(child) for child in node.get("children") or ())

    tree = session.get("tree")
    return outermost(tree) if tree else 0.0


def matmul_module_ms(session: Mapping[str, Any]) -> float:
    """ms per step in the outermost modules that are one matrix multiply.

    Example:
        >>> matmul_module_ms({"tree": {"children": [{"type": "Linear", "total_ms": {"mean": 4.0}},
        ...                                        {"type": "Conv2d", "total_ms": {"mean": 9.0}}]}})
        4.0
    """
    return outermost_ms(session, _MATMUL_MODULE)


def bf16_parts(
    session: Mapping[str, Any], kernels: float, compute: float
) -> tuple[float, float, float]:
    """``(part, matmuls, convs)``: what bf16 autocast changes (the library-kernel modules,
    ``kernels``, and the measured lines' matrix multiplies, at most the forward + backward
    ``compute``), the matrix multiplies within it and its convolutions."""
    lines = matmul_line_ms(session)
    part = min(kernels + lines, compute)
    matmuls = min(matmul_module_ms(session) + lines, part)
    return part, matmuls, min(conv_module_ms(session), part - matmuls)


def conv_module_ms(session: Mapping[str, Any]) -> float:
    """ms per step in the outermost convolution modules, depthwise and 1x1 ones left out (their
    ``conv`` facts; under bf16 autocast on a CPU, suite ``fused``'s ``bf16_convs``: depthwise
    0.93x-0.95x, 1x1 1.05x-1.36x, where dense ones gain 2x-3.7x: they count as the rest of the
    step does).

    Example:
        >>> depthwise = {"type": "Conv2d", "total_ms": {"mean": 5.0},
        ...              "conv": {"groups": 8, "in_channels": 8}}
        >>> pointwise = {"type": "Conv2d", "total_ms": {"mean": 3.0}, "conv": {"pointwise": True}}
        >>> conv_module_ms({"tree": {"children": [{"type": "Conv2d", "total_ms": {"mean": 9.0}},
        ...                 {"type": "BatchNorm2d", "total_ms": 2.0}, depthwise, pointwise]}})
        9.0
    """
    def light(facts: Mapping[str, Any]) -> bool:  # (depthwise or 1x1)
        groups = facts.get("groups")
        return bool(facts.get("pointwise") or (groups and groups == facts.get("in_channels")))

    left_out = sum(
        center(n.get("total_ms")) for n, _ in walk(session.get("tree"))
        if _CONV_MODULE.match(str(n.get("type") or "")) and light(n.get("conv") or {})
    )  # fmt: skip
    return max(0.0, outermost_ms(session, _CONV_MODULE) - left_out)


def bf16_bound(part: float, matmuls: float, others: float = 0.0, convs: float = 0.0) -> float:
    """The most ms bf16 autocast can save on ``part``: its ``matmuls`` at the matmul bound, its
    ``convs`` at the convolutions' (up to 2.5x: pytorch/examples super_resolution's training
    step went 471 -> 188 ms, told "up to 124 ms" at 1.45x), the rest of it at 1.45x; with
    matmuls, the ``others`` of the forward + backward too (the activations after a linear
    layer take its bfloat16 output: GELU on DINO's (16, 197, 768), forward + backward, 23.4 ms
    in float32, 6.2 ms on bfloat16; a softmax or an add is slower) at 1.45x. In the step's
    units: scale to the unprofiled step.

    Example:
        >>> round(bf16_bound(90.0, 0.0, others=10.0), 2), round(bf16_bound(90.0, 60.0, 10.0), 2)
        (27.93, 55.27)
        >>> round(bf16_bound(90.0, 0.0, convs=80.0), 2)
        51.1
    """
    matmul, rest = SPEEDUPS["bf16_autocast_cpu_matmul"].high, SPEEDUPS["bf16_autocast_cpu"].high
    conv = SPEEDUPS["bf16_autocast_cpu_conv"].high
    others = others if matmuls > 0 else 0.0
    convs = max(0.0, min(convs, part - matmuls))
    return (matmuls * (1 - 1 / matmul) + convs * (1 - 1 / conv)
            + (part - matmuls - convs + others) * (1 - 1 / rest))


#: the matrix multiplies and convolutions of a step averaging under this (ms a call, forward +
#: backward, as detailed steps time them) gain nothing from CPU bf16 autocast: its casts cost
#: what the bfloat16 kernels save. nanoGPT at width 64 (0.17 ms a call) went 15.9 -> 30.8 ms a
#: step under autocast; Lightning's CLI classifier (0.35 ms) and pytorch-forecasting's N-BEATS
#: (0.65 ms) gained nothing, where every client run over 2 ms a call but two (MAE at 64 px, a
#: siamese network) gained 10-100% of the bound
SMALL_CALL_MS = 1.0


def mean_call_ms(session: Mapping[str, Any]) -> float | None:
    """ms a call (forward + backward) of the kernels bf16 autocast changes: the outermost matmul
    and convolution modules, and the matrix multiplies the measured lines call outside them;
    None when the step has none.

    Example:
        >>> tree = {"children": [{"type": "Linear", "total_ms": {"mean": 4.0}, "calls_per_step": 8},
        ...                      {"type": "Conv2d", "total_ms": {"mean": 6.0}, "calls_per_step": 2}]}
        >>> mean_call_ms({"tree": tree}), mean_call_ms({"tree": {"children": []}})
        (1.0, None)
        >>> line = {"top_ops": [{"op": "Tensor.matmul", "forward_ms": 0.02, "calls_per_step": 2}]}
        >>> mean_call_ms({"hot_lines": {"lines": [line]}})
        0.01
    """
    pattern = re.compile(f"{_MATMUL_MODULE.pattern}|{_CONV_MODULE.pattern}")
    total = calls = 0.0

    def outermost(node: Mapping[str, Any]) -> None:
        nonlocal total, calls
        if pattern.match(str(node.get("type") or "")):
            total += center(node.get("total_ms"))
            calls += float(node.get("calls_per_step") or 0.0)
            return
        for child in node.get("children") or ():
            outermost(child)

    if session.get("tree"):
        outermost(session["tree"])
    for line in (session.get("hot_lines") or {}).get("lines") or ():
        for op in line.get("top_ops") or () if isinstance(line, Mapping) else ():
            if op.get("op") in MATMUL_OPS and float(op.get("calls_per_step") or 0.0) > 0:
                total += float(op.get("forward_ms") or 0.0) + float(op.get("backward_ms") or 0.0)
                calls += float(op["calls_per_step"])
    return total / calls if calls > 0 else None

"""How much of a convolution's work lands on its zero padding, read from its first call's input.

A 3x3 convolution with padding 1 on a 1x1 feature map reads one real pixel per output and eight
zeros: 89% of its multiply-adds, forward and backward, are on padding, and on a CPU it runs ~20x
slower than the 1x1 convolution of its centre weights, which computes the same function
(``torchdoctor bench fused``). It is what an ImageNet-shaped network does on small images:
torchvision's ResNet on 28x28 or 32x32 inputs brings its last stage to 1x1 maps and the one before
to 2x2 (56% on padding). The recorder reads each convolution's geometry once, at its first call
(:func:`note_conv_call`), and the session's tree carries it on the convolution's node
(``"conv"``, put there by :func:`torchdoctor.collect.assemble.attach_module_facts`) for the
dominant-module advice.

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    >>> conv_geometry(conv, (torch.zeros(2, 8, 1, 1),))["padding_share"]
    0.8889
"""

from __future__ import annotations

from typing import Any

import torch

from torchdoctor.collect.engine_state import channels_last_input


def _taps_inside(size: int, kernel: int, stride: int, left: int, dilation: int) -> tuple[int, int]:
    """(output positions, (output, tap) pairs that read the input, not the padding) along one
    dimension."""
    out = (size + 2 * left - dilation * (kernel - 1) - 1) // stride + 1
    inside = 0
    for tap in range(kernel):
        offset = tap * dilation - left  # output o reads input o * stride + offset
        first = max(0, -(offset // stride))  # the first o with o * stride + offset >= 0
        last = min(out - 1, (size - 1 - offset) // stride)
        inside += max(0, last - first + 1)
    return out, inside


def conv_geometry(module: Any, args: Any) -> dict[str, Any] | None:
    """The input size, kernel, stride, padding, dilation of a zero-padded convolution's call and
    the share of its (output, tap) pairs on the padding; ``centre_tap``: the input is 1 pixel
    wide in every dimension and one tap reads it, so the convolution is the 1x1 convolution of
    that tap's weights. None: no tensor input, no zero padding, or an unusual shape.

    Example:
        >>> import torch
        >>> conv = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
        >>> g = conv_geometry(conv, (torch.zeros(1, 4, 2, 2),))
        >>> g["input"], g["padding_share"], g["centre_tap"]
        ([2, 2], 0.5556, False)
        >>> conv_geometry(conv, (torch.zeros(1, 4, 1, 1),))["centre_tap"]
        True
    """
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    kernel = tuple(getattr(module, "kernel_size", ()))
    n = len(kernel)
    if x is None or not n or x.is_nested or x.dim() not in (n + 1, n + 2):
        return None
    if getattr(module, "padding_mode", "zeros") != "zeros" or getattr(module, "transposed", False):
        return None  # (a transposed convolution's padding crops its output: no zeros read)
    size = tuple(int(s) for s in x.shape[-n:])
    stride, dilation = tuple(module.stride), tuple(module.dilation)
    padding = module.padding
    if isinstance(padding, str):  # "valid": none; "same": (k - 1) * d in all, the left half
        padding = tuple(
            0 if padding == "valid" else d * (k - 1) // 2 for k, d in zip(kernel, dilation)
        )
    useful, single = 1.0, True
    for s, k, st, p, d in zip(size, kernel, stride, tuple(padding), dilation):
        out, inside = _taps_inside(s, k, st, p, d)
        if out <= 0:
            return None  # (torch would refuse this call)
        if not p:
            single = single and s == 1 and k == 1
            continue
        useful *= inside / (out * k)
        single = single and s == 1 and out == 1 and inside == 1
    if useful >= 1.0:
        return None  # no padding read: nothing to say
    return {
        "input": list(size), "kernel": list(kernel), "stride": list(stride),
        "padding": list(padding), "dilation": list(dilation),
        "padding_share": round(1.0 - useful, 4), "centre_tap": single,
    }  # fmt: skip


def note_conv_call(recorder: Any, node: int, module: Any, args: Any) -> None:
    """What a convolution's call tells: whether its input is channels_last (the engine knob),
    and, at its node's first call, its geometry (``recorder.conv_geometry``; a grouped one's
    ``groups`` and ``in_channels`` too, a 1x1 one's ``pointwise``).

    Example:
        >>> import torch
        >>> from torchdoctor.collect.clocks import CpuClock
        >>> from torchdoctor.collect.recorder import Recorder
        >>> rec = Recorder(CpuClock(), memory=False)
        >>> note_conv_call(rec, 1, torch.nn.Conv2d(2, 2, 3, padding=1), (torch.zeros(1, 2, 1, 1),))
        >>> rec.knobs["channels_last"], rec.conv_geometry[1]["centre_tap"]
        (False, True)
        >>> note_conv_call(rec, 2, torch.nn.Conv2d(4, 4, 1, groups=4), (torch.zeros(1, 4, 3, 3),))
        >>> rec.conv_geometry[2]
        {'groups': 4, 'in_channels': 4}
        >>> note_conv_call(rec, 3, torch.nn.Conv2d(4, 8, 1), (torch.zeros(1, 4, 3, 3),))
        >>> rec.conv_geometry[3]
        {'pointwise': True}
    """
    if recorder.knobs["channels_last"] is not True:
        recorder.knobs["channels_last"] = channels_last_input(args)
    if node not in recorder.conv_geometry:
        try:
            geometry = conv_geometry(module, args)
        except (TypeError, ValueError, AttributeError):  # (a convolution subclass of its own)
            geometry = None
        # grouped, depthwise and pointwise (1x1) convolutions: channels_last's CPU gain on
        # them is larger (analyze/advice/knobs.py)
        groups = getattr(module, "groups", 1)
        if isinstance(groups, int) and groups > 1:
            geometry = {**(geometry or {}), "groups": groups,
                        "in_channels": int(getattr(module, "in_channels", 0) or 0)}  # fmt: skip
        elif set(getattr(module, "kernel_size", ()) or ()) == {1}:
            geometry = {**(geometry or {}), "pointwise": True}
        recorder.conv_geometry[node] = geometry

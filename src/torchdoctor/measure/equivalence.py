"""Compare two outputs of any nesting (tensors, numbers, tuples/lists, dicts) for equivalence.

Floating tensors and floats are compared with ``|a - b| <= atol + rtol * |b|``; integer and
bool tensors (indices, selections, masks) and other values exactly. Every difference is named
by its path inside the output, e.g. ``out[1]['dist']: shape (4, 3) vs (4, 4)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Equivalence:
    """The verdict of :func:`compare_outputs`.

    Example:
        >>> import torch
        >>> v = compare_outputs(torch.ones(3), torch.ones(3))
        >>> v.equivalent
        True
    """

    equivalent: bool = True
    mismatches: list[str] = field(default_factory=list)
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0

    def fail(self, message: str) -> None:
        self.equivalent = False
        self.mismatches.append(message)


def _is_float(value: torch.Tensor) -> bool:
    return value.is_floating_point() or value.is_complex()


def _compare_tensors(
    a: torch.Tensor, b: torch.Tensor, path: str, rtol: float, atol: float, out: Equivalence
) -> None:
    if a.shape != b.shape:
        out.fail(f"{path}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
        return
    if _is_float(a) != _is_float(b) or (not _is_float(a) and a.dtype != b.dtype):
        out.fail(f"{path}: dtype {a.dtype} vs {b.dtype}")
        return
    a_cpu, b_cpu = a.detach().cpu(), b.detach().cpu()
    if not _is_float(a):
        different = (a_cpu != b_cpu).sum().item()
        if different:
            out.fail(f"{path}: {different} of {a.numel()} elements differ (exact comparison)")
        return
    a64, b64 = (
        a_cpu.to(torch.complex128 if a.is_complex() else torch.float64),
        b_cpu.to(torch.complex128 if b.is_complex() else torch.float64),
    )
    if a.numel() == 0:
        return
    nan_a, nan_b = torch.isnan(a64), torch.isnan(b64)
    if not torch.equal(nan_a, nan_b):
        out.fail(f"{path}: NaN in different places ({int(nan_a.sum())} vs {int(nan_b.sum())})")
        return
    both = ~nan_a
    diff = (a64 - b64).abs()
    diff = torch.where(both & (a64 == b64), torch.zeros_like(diff), diff)  # equal infinities
    diff = torch.where(both, diff, torch.zeros_like(diff))
    scale = b64.abs()
    rel = diff / scale.clamp_min(torch.finfo(torch.float64).tiny)
    max_abs, max_rel = float(diff.max()), float(torch.where(diff > 0, rel, 0 * rel).max())
    out.max_abs_error = max(out.max_abs_error, max_abs)
    out.max_rel_error = max(out.max_rel_error, max_rel)
    bad = diff > atol + rtol * scale
    if bool(bad.any()):
        index = tuple(int(i) for i in torch.nonzero(bad)[0])
        count = int(bad.sum())
        out.fail(
            f"{path}: {count} of {a.numel()} elements differ beyond rtol={rtol:g}, atol={atol:g} "
            f"(max abs error {max_abs:.3g}, first at index {index}: "
            f"{a64[index].item():.6g} vs {b64[index].item():.6g})"
        )


def compare_outputs(
    a: Any,
    b: Any,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    path: str = "out",
    _out: Equivalence | None = None,
) -> Equivalence:
    """Compare two outputs recursively; never raises on a mismatch, it names it instead.

    Example:
        >>> import torch
        >>> v = compare_outputs((torch.zeros(2), {"i": torch.tensor([1, 2])}),
        ...                     (torch.zeros(2), {"i": torch.tensor([1, 3])}))
        >>> v.mismatches
        ["out[1]['i']: 1 of 2 elements differ (exact comparison)"]
    """
    out = _out if _out is not None else Equivalence()
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            out.fail(f"{path}: type {type(a).__name__} vs {type(b).__name__}")
        else:
            _compare_tensors(a, b, path, rtol, atol, out)
    elif isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            out.fail(f"{path}: type {type(a).__name__} vs {type(b).__name__}")
        elif set(a) != set(b):
            only_a, only_b = sorted(map(repr, set(a) - set(b))), sorted(map(repr, set(b) - set(a)))
            out.fail(
                f"{path}: keys differ (only in baseline: {only_a}; only in candidate: {only_b})"
            )
        else:
            for key in a:
                compare_outputs(
                    a[key], b[key], rtol=rtol, atol=atol, path=f"{path}[{key!r}]", _out=out
                )
    elif (
        isinstance(a, Sequence)
        and not isinstance(a, str | bytes)
        or (isinstance(b, Sequence) and not isinstance(b, str | bytes))
    ):
        if type(a) is not type(b):
            out.fail(f"{path}: type {type(a).__name__} vs {type(b).__name__}")
        elif len(a) != len(b):
            out.fail(f"{path}: length {len(a)} vs {len(b)}")
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                compare_outputs(x, y, rtol=rtol, atol=atol, path=f"{path}[{i}]", _out=out)
    elif isinstance(a, float) or isinstance(b, float):
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            out.fail(f"{path}: {a!r} vs {b!r}")
            return out
        if math.isnan(fa) and math.isnan(fb) or fa == fb:
            return out
        err = abs(fa - fb)
        out.max_abs_error = max(out.max_abs_error, err)
        if abs(fb) > 0:
            out.max_rel_error = max(out.max_rel_error, err / abs(fb))
        if not err <= atol + rtol * abs(fb):
            out.fail(f"{path}: {fa!r} vs {fb!r}")
    elif a != b:
        out.fail(f"{path}: {a!r} vs {b!r}")
    return out

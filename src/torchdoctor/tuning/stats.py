"""Figures of trials: steady-state step time, paired speedups with their spread, drift.

A trial's step time is the median of its measured steps (warm-up excluded). A knob's speedup is
the median over (baseline, knob) pairs run back to back of ``baseline / knob``; the spread is
the lowest and highest pair. Drift is the largest relative difference between the values two
trials recorded step by step under the same seed (the losses, or the outermost outputs).

Example:
    >>> speedup_summary([1.2, 1.1, 1.3])
    {'median': 1.2, 'low': 1.1, 'high': 1.3, 'pairs': 3}
    >>> round(drift([2.0, 1.0], [2.0, 1.1]), 4)
    0.0909
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any


def measured_ms(result: Mapping[str, Any]) -> list[float]:
    """The measured step times of a trial (after its warm-up).

    Example:
        >>> measured_ms({"warmup": 1, "step_ms": [90.0, 10.0, 12.0]})
        [10.0, 12.0]
    """
    return list((result.get("step_ms") or [])[int(result.get("warmup") or 0) :])


def trial_ms(result: Mapping[str, Any]) -> float | None:
    """Median measured step time of a trial; None when it failed or measured nothing.

    Example:
        >>> trial_ms({"warmup": 0, "step_ms": [3.0, 1.0, 2.0]})
        2.0
    """
    if result.get("error"):
        return None
    steps = measured_ms(result)
    return statistics.median(steps) if steps else None


def warmup_s(result: Mapping[str, Any]) -> float:
    """Seconds from the script's start to the end of warm-up (set-up, first steps, compiling).

    Example:
        >>> warmup_s({"startup_s": 1.0, "warmup": 1, "step_ms": [500.0, 10.0]})
        1.5
    """
    warm = (result.get("step_ms") or [])[: int(result.get("warmup") or 0)]
    return float(result.get("startup_s") or 0.0) + sum(warm) / 1e3


def pair_speedups(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[float]:
    """``baseline / knob`` step time of each pair where both trials measured steps.

    Example:
        >>> base = {"warmup": 0, "step_ms": [10.0]}
        >>> pair_speedups([(base, {"warmup": 0, "step_ms": [5.0]})])
        [2.0]
    """
    out = []
    for base, knob in pairs:
        a, b = trial_ms(base), trial_ms(knob)
        if a and b:
            out.append(a / b)
    return out


def speedup_summary(ratios: Sequence[float]) -> dict[str, Any] | None:
    """Median speedup with its spread (lowest, highest pair); None without pairs.

    Example:
        >>> speedup_summary([1.5, 0.9, 1.2, 1.1])
        {'median': 1.15, 'low': 0.9, 'high': 1.5, 'pairs': 4}
        >>> speedup_summary([]) is None
        True
    """
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "low": min(ratios), "high": max(ratios),
            "pairs": len(ratios)}  # fmt: skip


def drift(values: Sequence[float], reference: Sequence[float]) -> float | None:
    """Largest relative difference, value by value, over the steps both recorded.

    Each difference is divided by the reference value (at least 1e-3 of the largest reference
    value, so a loss near zero does not blow it up). Non-finite values are an infinite drift;
    None when there is nothing to compare.

    Example:
        >>> drift([2.0, 3.0], [2.0, 4.0])
        0.25
        >>> drift([float("nan")], [1.0]), drift([], [1.0])
        (inf, None)
    """
    count = min(len(values), len(reference))
    if count == 0:
        return None
    scale = (
        max(abs(v) for v in reference[:count] if math.isfinite(v))
        if any(math.isfinite(v) for v in reference[:count])
        else 1.0
    )
    worst = 0.0
    for value, ref in zip(values[:count], reference[:count], strict=True):
        if not (math.isfinite(value) and math.isfinite(ref)):
            if math.isfinite(value) != math.isfinite(ref) or value != ref:
                return math.inf
            continue
        denominator = max(abs(ref), 1e-3 * scale, 1e-12)
        worst = max(worst, abs(value - ref) / denominator)
    return worst


def median_or_none(values: Sequence[float]) -> float | None:
    """Median of the values, None when there are none.

    Example:
        >>> median_or_none([]), median_or_none([1.0, 3.0])
        (None, 2.0)
    """
    return statistics.median(values) if values else None

"""Figures of trials: steady-state step time, paired speedups with their spread, drift.

A trial's step time is the median of its measured steps (warm-up excluded). A knob's speedup is
the median over (baseline, knob) pairs run back to back of ``baseline / knob``; the spread is
the lowest and highest pair. Drift is the largest relative difference between the values two
trials recorded step by step under the same seed (the outermost outputs; a training run's
losses over its first steps and, on average, its second half).

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


#: a training run's losses compared one by one over its first few steps (before the optimizer's
#: updates amplify a knob's rounding: the losses of a chaotic run, SGD at lr 20, part ways
#: whatever the knob), then by the mean of the second half, where only a higher loss counts (a
#: knob that degrades training)
EARLY_STEPS = 3


def drift(
    values: Sequence[float], reference: Sequence[float], *, training: bool = False
) -> float | None:
    """Largest relative difference, value by value, over the steps both recorded; for a
    training run's losses (``training``), over its first EARLY_STEPS steps, and how much higher
    the mean loss of the second half is.

    Each difference is divided by the reference value (at least 1e-3 of the largest reference
    value, so a loss near zero does not blow it up). Non-finite values are an infinite drift;
    None when there is nothing to compare.

    Example:
        >>> drift([2.0, 3.0], [2.0, 4.0])
        0.25
        >>> drift([float("nan")], [1.0]), drift([], [1.0])
        (inf, None)
        >>> chaotic = [9.96, 8.84, 7.94, 19.7, 14.1, 9.06, 13.1]  # word_language_model, lr 20
        >>> bf16 = [9.95, 8.84, 7.94, 19.7, 15.8, 10.7, 5.69]
        >>> round(drift(bf16, chaotic), 3), round(drift(bf16, chaotic, training=True), 3)
        (0.566, 0.001)
        >>> round(drift([9.96, 8.84, 7.94, 21.0, 18.0, 14.0, 16.0], chaotic, training=True), 3)
        0.233
    """
    count = min(len(values), len(reference))
    if count == 0:
        return None
    values, reference = list(values[:count]), list(reference[:count])
    finite = [abs(v) for v in reference if math.isfinite(v)]
    scale = max(finite) if finite else 1.0
    floor = max(1e-3 * scale, 1e-12)
    worst = 0.0
    for index, (value, ref) in enumerate(zip(values, reference, strict=True)):
        if not (math.isfinite(value) and math.isfinite(ref)):
            if math.isfinite(value) != math.isfinite(ref) or value != ref:
                return math.inf
            continue
        if not training or index < EARLY_STEPS:
            worst = max(worst, abs(value - ref) / max(abs(ref), floor))
    if training and count > EARLY_STEPS:
        half = [(v, r) for v, r in zip(values[count // 2 :], reference[count // 2 :], strict=True)
                if math.isfinite(v) and math.isfinite(r)]  # fmt: skip
        if half:
            mine, theirs = (statistics.fmean(column) for column in zip(*half, strict=True))
            worst = max(worst, (mine - theirs) / max(abs(theirs), floor))  # a higher loss
    return worst


def trial_drift(result: Mapping[str, Any], reference: Mapping[str, Any]) -> float | None:
    """:func:`drift` of two trials' recorded values, as training losses when the reference's
    steps were training steps (ended at optimizer steps or backward calls).

    Example:
        >>> trial_drift({"values": [1.0, 2.0]}, {"values": [1.0, 2.5], "mode": "module"})
        0.2
    """
    training = reference.get("mode") in ("optimizer", "backward")
    return drift(result.get("values") or [], reference.get("values") or [], training=training)


def median_or_none(values: Sequence[float]) -> float | None:
    """Median of the values, None when there are none.

    Example:
        >>> median_or_none([]), median_or_none([1.0, 3.0])
        (None, 2.0)
    """
    return statistics.median(values) if values else None

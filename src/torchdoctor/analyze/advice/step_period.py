"""The period of a run's long steps: the common gap between them, the longer ones' among a few
hiccups, or the phase of a gap that some of them keep (periodic work of varying length).

Example:
    >>> period_of([299, 599, 899])
    300
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping
from typing import Any

#: long steps this many times longer (excess over the median) than the others, at the widest
#: such gap, are the periodic work beside hiccups (the detail schedule's ratio for alike steps)
LIKE_RATIO = 4.0
#: ... the others are hiccups beside them when their extra time is under this share of all
HICCUPS = 0.1
#: long steps at one phase of a period, at least, and their share of the long steps
MIN_PHASED, PHASED_SHARE = 5, 0.85


def period_of(indices: list[int]) -> int | None:
    """The common gap between the long steps' indices (each within 10% or 1), else None.

    Example:
        >>> period_of([19, 39, 59]), period_of([19, 40, 59]), period_of([3, 50])
        (20, 20, None)
    """
    gaps = [b - a for a, b in zip(indices, indices[1:])]
    if not gaps:
        return None
    period = round(statistics.median(gaps))
    tolerance = max(1, round(0.1 * period))
    if period < 2 or any(abs(g - period) > tolerance for g in gaps):
        return None
    if len(gaps) < 2 and abs(indices[0] + 1 - period) > tolerance + 2:
        return None  # (two long steps: the first must also come about one period in)
    return period


def periodic_indices(
    long: list[Mapping[str, Any]], median: float
) -> tuple[list[Mapping[str, Any]], int | None, bool]:
    """The long steps, their period and whether it is a phase (:func:`phase_period`: some of
    the steps at it are long); where they have none, the period of the longer ones
    (their excess over the median LIKE_RATIO times or more the others', at the widest such gap)
    when the others are hiccups, their extra time under HICCUPS of all of it (bigram.py's
    evaluations every 300 of 3,000 steps, 210-960 ms over a 2.5 ms median, and 8 steps of
    7.6-13 ms among them: no period, '17 of 2,999 steps', '200 model calls per long step'):
    the longer ones alone, with it.

    Example:
        >>> def steps(*walls):  # (index: wall ms), in step order
        ...     return [{"index": i, "wall_ms": w} for i, w in sorted(walls)]
        >>> long = [(i, 480.0) for i in (299, 599, 899, 1199)]
        >>> hiccups = [(i, 7.7) for i in (700, 1634, 1700, 1702)]
        >>> found, period, _ = periodic_indices(steps(*long, *hiccups), 1.5)
        >>> len(found), period
        (4, 300)
        >>> periodic_indices(steps(*long[:2], *hiccups), 1.5)[1] is None  # (two alike: too few to tell)
        True
        >>> periodic_indices(steps(*long, (700, 300.0)), 1.5)[1] is None  # (no hiccup: other work)
        True
    """
    period = period_of(first_of_runs([int(s.get("index", 0)) for s in long]))
    if period is not None or len(long) < 3:
        return long, period, False
    alike = _longer(long, median)
    period = period_of(first_of_runs([int(s.get("index", 0)) for s in alike or ()]))
    if alike is not None and period is not None:
        return alike, period, False
    phased = phase_period(long)
    return (phased[0], phased[1], True) if phased is not None else (long, None, False)


def _longer(long: list[Mapping[str, Any]], median: float) -> list[Mapping[str, Any]] | None:
    """The long steps LIKE_RATIO times or more longer (excess over the median) than the others
    at the widest such gap, when the others are hiccups (under HICCUPS of the extra time)."""
    excess = sorted(max(1e-9, float(s["wall_ms"]) - median) for s in long)
    gap, cut = max((b / a, b) for a, b in zip(excess, excess[1:]))
    if gap < LIKE_RATIO:
        return None
    alike = [s for s in long if float(s["wall_ms"]) - median >= cut]
    rest = sum(float(s["wall_ms"]) - median for s in long if s not in alike)
    if len(alike) < 3 or rest > HICCUPS * sum(float(s["wall_ms"]) - median for s in long):
        return None
    return alike


def phase_period(long: list[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], int] | None:
    """The long steps at one phase of the commonest gap between them (its multiples apart),
    when PHASED_SHARE of them are, and the gap: periodic work of varying length, long in some
    of its steps only (minimalRL's DQN: an episode played between train()'s 10 updates, every
    10 steps, long once the episodes grew: 102 of 112 long steps at index 9 mod 10, the others
    a busy host's; read as '112 of 1,959 steps', no period).

    Example:
        >>> rollouts = [{"index": i} for i in range(9, 400, 10) if i % 30 != 19]
        >>> found, gap = phase_period(sorted(rollouts + [{"index": 60}], key=lambda s: s["index"]))
        >>> gap, len(found), len(rollouts)
        (10, 27, 27)
        >>> phase_period([{"index": i} for i in (3, 17, 40, 41, 77, 90, 130)]) is None
        True
    """
    indices = [int(s.get("index", 0)) for s in long]
    gaps = [b - a for a, b in zip(indices, indices[1:]) if b - a > 1]
    if len(long) < MIN_PHASED or not gaps:
        return None
    counts = Counter(g for g in gaps if g >= 4)
    for gap in sorted(counts, key=lambda g: (-counts[g], g))[:3]:  # (the commonest first)
        phase = Counter(i % gap for i in indices).most_common(1)[0][0]
        at = [s for s in long if int(s.get("index", 0)) % gap == phase]
        if len(at) >= max(MIN_PHASED, PHASED_SHARE * len(long)):
            return at, gap
    return None


def first_of_runs(indices: list[int]) -> list[int]:
    """The first index of each run of consecutive ones: work spilling into the next step (an
    evaluation straddling two, the step after a detailed one paying for it) is one event.

    Example:
        >>> first_of_runs([31, 63, 95, 96, 127])
        [31, 63, 95, 127]
    """
    return [i for k, i in enumerate(indices) if k == 0 or i - indices[k - 1] > 1]

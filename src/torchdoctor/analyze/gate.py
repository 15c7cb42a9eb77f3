"""The CI gate of ``torchdoctor diff BASE NEW --fail-if-slower 5%``: is NEW's step slower?

NEW fails when both hold:

1. **beyond the threshold**: its median step time exceeds BASE's by more than the threshold
   (``new_median - base_median > threshold_pct / 100 * base_median``), and
2. **beyond the measured spread**: the two runs' interquartile ranges do not overlap, NEW's
   lower quartile is above BASE's upper quartile (``new_q1 > base_q3``), so at least three
   quarters of NEW's steps are slower than three quarters of BASE's.

Quartiles come from the sessions' per-step wall times (``steps[].wall_ms``), else from their
``step_ms`` summary. A rerun of the same code moves the median by noise, inside the spread,
and passes; a change that adds time to every step moves the whole distribution and fails.
``prob_slower`` (the Mann-Whitney probability that a NEW step is slower than a BASE step)
is reported for reading, not used in the decision. Pure function, no I/O.

Example:
    >>> base = {"steps": [{"wall_ms": v} for v in (10.0, 10.2, 10.4, 10.1)]}
    >>> slow = {"steps": [{"wall_ms": v + 20.0} for v in (10.0, 10.2, 10.4, 10.1)]}
    >>> step_gate(base, slow, 5.0)["slower"], step_gate(base, base, 5.0)["slower"]
    (True, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _quantile(data: Sequence[float], q: float) -> float:
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def step_distribution(session: Mapping[str, Any]) -> dict[str, Any]:
    """Median, quartiles and per-step times of a session's step (``times`` may be empty).

    Example:
        >>> step_distribution({"steps": [{"wall_ms": 1.0}, {"wall_ms": 3.0}]})["median"]
        2.0
    """
    times = sorted(
        float(s["wall_ms"])
        for s in session.get("steps") or ()
        if isinstance(s, Mapping) and isinstance(s.get("wall_ms"), (int, float))
    )
    if times:
        return {"median": _quantile(times, 0.5), "q1": _quantile(times, 0.25),
                "q3": _quantile(times, 0.75), "steps": len(times), "times": times}  # fmt: skip
    stat = session.get("step_ms") or {}
    median = float(stat.get("median") or 0.0)
    return {"median": median, "q1": float(stat.get("q1", median) or 0.0),
            "q3": float(stat.get("q3", median) or 0.0), "steps": 0, "times": []}  # fmt: skip


def prob_slower(base: Sequence[float], new: Sequence[float]) -> float | None:
    """P(a NEW step is slower than a BASE step), ties counting half (Mann-Whitney U / n1 n2).

    Example:
        >>> prob_slower([1.0, 2.0], [3.0, 4.0]), prob_slower([], [1.0])
        (1.0, None)
    """
    if not base or not new:
        return None
    wins = sum((n > b) + 0.5 * (n == b) for n in new for b in base)
    return wins / (len(base) * len(new))


def step_gate(
    base: Mapping[str, Any], new: Mapping[str, Any], threshold_pct: float
) -> dict[str, Any]:
    """Decide whether NEW's step time is slower than BASE's (see the module docstring).

    Example:
        >>> g = step_gate({"step_ms": {"median": 10.0, "q1": 9.0, "q3": 11.0}},
        ...               {"step_ms": {"median": 12.0, "q1": 11.5, "q3": 12.5}}, 5.0)
        >>> g["slower"], g["delta_pct"], g["beyond_spread"]
        (True, 20.0, True)
    """
    if not threshold_pct >= 0:
        raise ValueError(f"the threshold must be a percentage >= 0, got {threshold_pct}")
    old, cur = step_distribution(base), step_distribution(new)
    if old["median"] <= 0 or cur["median"] <= 0:
        raise ValueError(
            "both sessions need a measured step time to compare (a median step time > 0); "
            f"got base {old['median']:g} ms and new {cur['median']:g} ms: were steps recorded?"
        )
    delta = cur["median"] - old["median"]
    beyond_threshold = delta > threshold_pct / 100.0 * old["median"]
    beyond_spread = cur["q1"] > old["q3"]
    return {
        "threshold_pct": float(threshold_pct),
        "base": {k: v for k, v in old.items() if k != "times"},
        "new": {k: v for k, v in cur.items() if k != "times"},
        "delta_ms": delta,
        "delta_pct": 100.0 * delta / old["median"],
        "beyond_threshold": beyond_threshold,
        "beyond_spread": beyond_spread,
        "prob_slower": prob_slower(old["times"], cur["times"]),
        "slower": bool(beyond_threshold and beyond_spread),
    }

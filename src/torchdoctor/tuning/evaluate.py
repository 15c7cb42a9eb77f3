"""Verdicts: each knob's row from its trial pairs, and the combination to try.

A knob is *rejected* when its drift from the baseline exceeds ``max(tolerance, 3 x baseline
drift)`` (the baseline's own run-to-run drift, measured by running it twice under the same
seed), *failed* when a trial broke, *faster* (accepted) when the median pair speedup is at
least ``1 + MIN_GAIN`` and every pair, at least ``MIN_PAIRS`` of them, was faster (one pair that
looks faster is *unconfirmed*: on a busy machine one pair can be off by far more than a knob
gains), else *no gain* or *slower*.

Example:
    >>> base = {"warmup": 0, "step_ms": [10.0], "values": [1.0], "startup_s": 1.0}
    >>> fast = {"warmup": 0, "step_ms": [5.0], "values": [1.0], "startup_s": 1.0}
    >>> row = knob_row("compile", [(base, fast)] * 2, baseline_drift=0.0, tolerance=0.05)
    >>> row["verdict"], row["speedup"]["median"]
    ('faster', 2.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.tuning.knobs import KNOB_BY_NAME
from torchdoctor.tuning.stats import (
    median_or_none,
    pair_speedups,
    speedup_summary,
    trial_drift,
    warmup_s,
)

#: a knob must save at least this share (median over pairs) to be accepted
MIN_GAIN = 0.03
#: pairs a knob must win, all of them, to be accepted
MIN_PAIRS = 2

Pair = tuple[Mapping[str, Any], Mapping[str, Any]]


def drift_limit(tolerance: float, baseline_drift: float | None) -> float:
    """The drift above which a knob is rejected.

    Example:
        >>> drift_limit(0.05, 0.001), drift_limit(0.05, 0.1)
        (0.05, 0.30000000000000004)
    """
    return max(tolerance, 3.0 * (baseline_drift or 0.0))


def _first_error(pairs: Sequence[Pair]) -> str | None:
    for _, knob in pairs:
        if knob.get("error"):
            return str(knob["error"]).strip().splitlines()[-1][:300]
    return None


def _graph_breaks(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for _, knob in pairs:
        for item in knob.get("graph_breaks") or ():
            key = (item.get("file"), item.get("line"), item.get("reason"))
            seen.setdefault(key, dict(item))
    return list(seen.values())


def knob_row(
    name: str,
    pairs: Sequence[Pair],
    *,
    baseline_drift: float | None,
    tolerance: float,
    title: str | None = None,
) -> dict[str, Any]:
    """The table row of one knob (or combination) measured in ``pairs`` (baseline, knob).

    Example:
        >>> base = {"warmup": 0, "step_ms": [10.0], "values": [1.0]}
        >>> drifted = {"warmup": 0, "step_ms": [5.0], "values": [1.5]}
        >>> row = knob_row("bf16_autocast", [(base, drifted)], baseline_drift=0.0, tolerance=0.05)
        >>> row["verdict"], row["drift"], row["reason"]
        ('rejected', 0.5, 'drift 0.5 > limit 0.05 (tolerance 0.05, baseline drift 0)')
    """
    knob = KNOB_BY_NAME.get(name)
    row: dict[str, Any] = {
        "knob": name, "title": title or (knob.title if knob else name), "status": "measured",
        "reason": None, "speedup": speedup_summary(pair_speedups(pairs)),
        "warmup_cost_s": None, "peak_memory_bytes": None, "memory_delta_bytes": None,
        "drift": None, "drift_limit": drift_limit(tolerance, baseline_drift),
        "verdict": "", "accepted": False, "graph_breaks": _graph_breaks(pairs),
        "trials": len(pairs),
    }  # fmt: skip
    ok = [(b, k) for b, k in pairs if not b.get("error") and not k.get("error")]
    error = explained_error(name, _first_error(pairs))
    if error and not ok:
        row.update(status="failed", verdict="failed", reason=error)
        return row
    drifts = [d for b, k in ok if (d := trial_drift(k, b)) is not None]
    row["drift"] = max(drifts) if drifts else None
    row["warmup_cost_s"] = median_or_none([warmup_s(k) - warmup_s(b) for b, k in ok])
    peaks = [k.get("peak_memory_bytes") for _, k in ok if k.get("peak_memory_bytes") is not None]
    base_peaks = [b.get("peak_memory_bytes") for b, _ in ok if b.get("peak_memory_bytes")
                  is not None]  # fmt: skip
    row["peak_memory_bytes"] = median_or_none(peaks)
    if peaks and base_peaks:
        row["memory_delta_bytes"] = median_or_none(peaks) - median_or_none(base_peaks)
    speed = row["speedup"]
    if row["drift"] is not None and row["drift"] > row["drift_limit"]:
        row["verdict"] = "rejected"
        row["reason"] = (f"drift {row['drift']:.3g} > limit {row['drift_limit']:.3g} (tolerance"
                         f" {tolerance:.3g}, baseline drift {baseline_drift or 0.0:.3g})")  # fmt: skip
    elif speed is None:
        row.update(verdict="failed", status="failed", reason=error or "no step was measured")
    elif speed["median"] >= 1.0 + MIN_GAIN and speed["low"] > 1.0:
        if speed["pairs"] >= MIN_PAIRS:
            row.update(verdict="faster", accepted=True)
        else:
            row.update(verdict="unconfirmed", reason="faster in its only pair; give more "
                       "--budget (or --rounds 2) to confirm")  # fmt: skip
    elif speed["median"] < 1.0 - MIN_GAIN:
        row["verdict"] = "slower"
    else:
        row["verdict"] = "no gain"
    if error and row["verdict"] != "rejected":
        row["reason"] = f"some trials failed: {error}"
    return row


#: what autocast trials raise when an op without an autocast rule meets tensors of both dtypes
_MIXED_DTYPES = ("but expected BFloat16", "but expected Half", "expected scalar type",
                 "must have the same dtype", "expected both vectors to have same dtype",
                 "expected mat1 and mat2 to have the same dtype")  # fmt: skip


def explained_error(knob: str, error: str | None) -> str | None:
    """A trial's error, with what it means when it is a known failure of the knob: under
    autocast, a dtype mismatch is an op autocast leaves alone meeting a float32 tensor and a
    lower-precision one (pytorch/examples VAE: ``F.binary_cross_entropy`` on a sigmoid's
    output).

    Example:
        >>> text = explained_error("bf16_autocast", "Found dtype Float but expected BFloat16")
        >>> "binary_cross_entropy_with_logits" in text, text.endswith("and tune again)")
        (True, True)
        >>> explained_error("compile", "RuntimeError: boom")
        'RuntimeError: boom'
    """
    if error and knob.endswith("_autocast") and any(p in error for p in _MIXED_DTYPES):
        return (
            f"{error} (under autocast an op without an autocast rule met a float32 and a "
            "lower-precision tensor: a loss on a sigmoid's output (binary_cross_entropy: use "
            "binary_cross_entropy_with_logits on the logits), a custom op or a buffer of the "
            "other dtype; fix that op (or cast its inputs) and tune again)"
        )
    return error


def combination(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The accepted knobs that go together: the fastest of each group, best first.

    Example:
        >>> rows = [{"knob": "compile", "accepted": True, "speedup": {"median": 1.5}},
        ...         {"knob": "bf16_autocast", "accepted": True, "speedup": {"median": 1.2}},
        ...         {"knob": "fp16_autocast", "accepted": True, "speedup": {"median": 1.3}}]
        >>> combination(rows)
        ['compile', 'fp16_autocast']
    """
    accepted = sorted((r for r in rows if r.get("accepted")),
                      key=lambda r: -r["speedup"]["median"])  # fmt: skip
    chosen: list[str] = []
    groups: set[str] = set()
    for row in accepted:
        knob = KNOB_BY_NAME.get(row["knob"])
        group = knob.group if knob else ""
        if group and group in groups:
            continue
        groups.add(group)
        chosen.append(row["knob"])
    return chosen


def knob_rows(
    names: Sequence[str],
    skipped: Mapping[str, str],
    pairs: Mapping[str, Sequence[Pair]],
    *,
    baseline_drift: float | None,
    tolerance: float,
    left_out: Sequence[str] = (),
    interrupted: bool = False,
) -> list[dict[str, Any]]:
    """One row per knob: skipped (with the reason), not measured, or its measured verdict.

    Example:
        >>> [r["verdict"] for r in knob_rows(["tf32"], {"tf32": "needs CUDA"}, {},
        ...                                  baseline_drift=None, tolerance=0.05)]
        ['skipped']
    """
    rows = []
    for name in names:
        knob = KNOB_BY_NAME[name]
        if name in skipped:
            rows.append({"knob": name, "title": knob.title, "status": "skipped",
                         "reason": skipped[name], "verdict": "skipped", "accepted": False})  # fmt: skip
        elif not pairs.get(name):
            why = ("no time left in the budget" if name in left_out or not interrupted
                   else "interrupted")  # fmt: skip
            rows.append({"knob": name, "title": knob.title, "status": "not measured",
                         "reason": why, "verdict": "not measured", "accepted": False})  # fmt: skip
        else:
            rows.append(knob_row(name, pairs[name], baseline_drift=baseline_drift,
                                 tolerance=tolerance))  # fmt: skip
    return rows

"""Knob advice measured by ``torchdoctor tune`` (``session["tune"]``), for rule engine-knobs.

Each knob the tune accepted (faster, drift within its limit) becomes advice with the measured
saving: ``step x (1 - 1 / speedup)``, the speedup being the median of (baseline, knob) pairs
over the whole step, its range from the lowest and highest pair. It is ranked with the other
measured advice (rule ``tuned-knob``), not as a generic knob. A knob the tune measured and did
not accept gets no stated advice either: the measurement replaces the guess.

Example:
    >>> tune = {"rows": [{"knob": "compile", "title": "compile", "accepted": True,
    ...          "speedup": {"median": 1.25, "low": 1.2, "high": 1.3, "pairs": 3},
    ...          "drift": 0.001, "drift_limit": 0.05, "status": "measured"}]}
    >>> (advice,) = measured_knob_advice({"step_ms": {"median": 100.0}, "tune": tune})
    >>> advice.rule, round(advice.estimated_saving_ms, 3)
    ('tuned-knob', 20.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, tree_step_ms

#: the stated knobs of rule engine-knobs -> the tune knobs that measure them
MEASURED_BY = {
    "autocast": ("bf16_autocast", "fp16_autocast"),
    "tf32": ("tf32",),
    "channels_last": ("channels_last",),
    "compile": ("compile", "compile_reduce_overhead", "compile_max_autotune"),
}


#: an advice's cause -> the tune knobs that measure its remedy (the data-loading and optimizer
#: rules read their knob themselves)
KNOBS_OF_CAUSE = {
    "torch.compile": MEASURED_BY["compile"],
    "channels_last": MEASURED_BY["channels_last"],
    "bf16-autocast": MEASURED_BY["autocast"],
    "caching-allocator": ("malloc_cache",),  # (kernel-page-faults: glibc's mmap off)
}
CAUSE_OF_KNOB = {knob: cause for cause, knobs in KNOBS_OF_CAUSE.items() for knob in knobs}


def with_tune(session: Mapping[str, Any], found: list[Advice]) -> list[Advice]:
    """Other rules' advice whose remedy the tune measured: a stated saving gives way to the
    measurement. Accepted: the stated saving is dropped (the tuned-knob entry, same cause,
    merges with it and brings the measured one). Not faster: no saving, the measurement in the
    evidence, low confidence, half the rank (what else the advice says may still hold).

    Example:
        >>> rows = [{"knob": "compile", "title": "torch.compile", "status": "measured",
        ...          "accepted": False, "speedup": {"median": 0.97, "low": 0.9, "high": 1.0,
        ...          "pairs": 3}}]
        >>> a = Advice("dominant-module", "compile the stack", estimated_saving_ms=16.0,
        ...            heat=0.6, cause="torch.compile")
        >>> (b,) = with_tune({"tune": {"rows": rows}}, [a])
        >>> b.estimated_saving_ms, b.heat, b.evidence[-1][:45]
        (None, 0.3, 'torchdoctor tune measured torch.compile on th')
    """
    rows = tune_rows(session)
    for item in found:
        knobs = KNOBS_OF_CAUSE.get(item.cause or "")
        measured_rows = [r for r in rows if r.get("knob") in (knobs or ())]
        if item.rule == "tuned-knob" or not measured_rows:
            continue
        item.estimated_saving_ms, item.saving_range_ms = None, None
        if any(r.get("accepted") for r in measured_rows):
            continue
        for row in measured_rows:
            speed = row.get("speedup") or {}
            item.evidence.append(
                f"torchdoctor tune measured {row.get('title') or row.get('knob')} on this "
                f"script: {float(speed.get('median') or 0.0):.3g}x over the whole step "
                f"({row.get('verdict') or 'not accepted'}): no saving to expect from it here"
            )
        item.confidence, item.heat = "low", 0.5 * item.heat
    return found


def tune_rows(session: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The measured rows of the session's tune (empty when it has none).

    Example:
        >>> tune_rows({"tune": {"rows": [{"knob": "tf32", "status": "skipped"}]}})
        []
    """
    tune = session.get("tune") or {}
    rows = [r for r in tune.get("rows") or () if r.get("status") == "measured"]
    combination = tune.get("combination")
    if combination and len(tune.get("chosen") or ()) > 1:  # only when it beat every knob alone
        rows.append(combination)
    return rows


def measured(session: Mapping[str, Any], stated_knob: str) -> bool:
    """Whether the tune measured one of the knobs behind a stated knob advice.

    Example:
        >>> measured({"tune": {"rows": [{"knob": "compile", "status": "measured"}]}}, "compile")
        True
    """
    names = {r.get("knob") for r in tune_rows(session)}
    return any(name in names for name in MEASURED_BY.get(stated_knob, (stated_knob,)))


def _saving(step: float, speedup: float) -> float:
    return step * (1.0 - 1.0 / speedup) if speedup > 0 else 0.0


def measured_knob_advice(session: Mapping[str, Any]) -> list[Advice]:
    """Advice for each knob (and the combination) the tune accepted, with the measured saving.

    Example:
        >>> rows = [{"knob": "tf32", "title": "TF32 matmuls", "accepted": True, "status": "measured",
        ...          "speedup": {"median": 2.0, "low": 1.5, "high": 2.5, "pairs": 1}},
        ...         {"knob": "compile", "accepted": False, "status": "measured",
        ...          "speedup": {"median": 0.9, "low": 0.8, "high": 1.0, "pairs": 3}}]
        >>> (advice,) = measured_knob_advice({"step_ms": {"median": 40.0}, "tune": {"rows": rows}})
        >>> advice.title, advice.confidence, advice.estimated_saving_ms
        ('Turn on TF32 matmuls (measured 2x)', 'medium', 20.0)
        >>> [round(ms, 3) for ms in advice.saving_range_ms]  # from the lowest and highest pair
        [13.333, 24.0]
    """
    step = tree_step_ms(session)
    out = []
    for row in tune_rows(session):
        speed = row.get("speedup")
        if not row.get("accepted") or not speed or step <= 0:
            continue
        evidence = [
            f"measured by torchdoctor tune on this script: {speed['median']:.3g}x over the "
            f"whole step ({speed['low']:.3g}-{speed['high']:.3g} over {speed['pairs']} "
            "(baseline, knob) pair(s), interleaved)",
        ]
        if row.get("drift") is not None:
            evidence.append(f"loss/output drift {row['drift']:.3g} (limit "
                            f"{row.get('drift_limit', 0.0):.3g})")  # fmt: skip
        if row.get("warmup_cost_s") is not None:
            evidence.append(f"warm-up/compile cost {row['warmup_cost_s']:+.3g} s once")
        for item in (row.get("graph_breaks") or [])[:3]:
            evidence.append(f"graph break at {item.get('file')}:{item.get('line')}: "
                            f"{item.get('reason')}")  # fmt: skip
        saving = _saving(step, speed["median"])
        advice = Advice(
            rule="tuned-knob",
            title=f"Turn on {row.get('title') or row['knob']} (measured {speed['median']:.3g}x)",
            confidence="high" if speed["pairs"] >= 2 else "medium",
            estimated_saving_ms=saving,
            saving_range_ms=sorted([_saving(step, speed["low"]), _saving(step, speed["high"])]),
            evidence=evidence,
            fix=f"measured saving {fmt_ms(saving)} per step; enable it as in the snippet",
            references=["torchdoctor tune"],
            code=row.get("snippet") or None,
            heat=min(1.0, max(0.0, 1.0 - 1.0 / speed["median"])),
            cause=CAUSE_OF_KNOB.get(str(row.get("knob"))),  # (merges with the rule it measured)
        )
        out.append(advice)
    return out

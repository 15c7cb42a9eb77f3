"""Rule ``periodic-steps``: a few steps, often every N, take several times the median step.

An evaluation every N steps, a checkpoint, sample generation: the loop's periodic work lands in
one step out of N, which the median step and the tree (made of typical detailed steps, long
ones left out) do not show. Every step's wall time and phases are recorded, light steps
included (``session["steps"]``), so those steps are found in the whole run: their extra time
over the median step, summed over the run, is a measured cost; the phase that holds it says
what kind of work it is. Extra time in the data phase is left to the data-loading rule
(workers restarted at every epoch).

Example:
    >>> steps = [{"index": i, "wall_ms": 400.0 if i % 20 == 19 else 100.0, "detailed": False,
    ...           "phases": {"other": 310.0 if i % 20 == 19 else 10.0, "data": 1.0}}
    ...          for i in range(60)]
    >>> [a.title for a in periodic_steps({"steps": steps})]
    ['Every 20 steps a step takes 4.0x the median: periodic work between steps is 13% of the run']
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, one_step_run

#: a step this many times the median (and LONG_MS past it) is a long step
LONG = 2.0
LONG_MS = 5.0
#: long steps are periodic work only when rare: at most this share of the steps
MAX_SHARE_OF_STEPS = 0.15
#: ... and worth a word when their extra time is at least this share of the run
MIN_SHARE_OF_RUN = 0.03
#: two long steps at no common period are reported only when this many times the median
RARE_LONG = 4.0
#: light steps needed to tell a long step from the rest
MIN_STEPS = 10

#: what the extra time of each phase is, in the advice's words
_PHASE_WORK = {
    "other": "between steps (after optimizer.step(), before the next forward: an evaluation, "
    "a checkpoint, logging, sample generation)",
    "forward": "in the forward phase (light steps do not tell the forward from the work "
    "between steps: an evaluation, a checkpoint, logging)",
    "backward": "in the backward phase",
    "optimizer": "in the optimizer step (a scheduler, an extra optimizer pass)",
}


def _long_steps(steps: list[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], float]:
    """The long steps among ``steps`` (the first two left out: warm-up residue) and the
    median wall time."""
    median = statistics.median(float(s["wall_ms"]) for s in steps)
    long = [
        s for s in steps[2:]
        if float(s["wall_ms"]) > LONG * median and float(s["wall_ms"]) - median > LONG_MS
    ]  # fmt: skip
    return long, median


def _as_light(step: Mapping[str, Any]) -> dict[str, Any]:
    """A detailed step's record with its forward counted in ``other``, as a light step's is.

    Example:
        >>> _as_light({"index": 3, "phases": {"forward": 2.0, "other": 5.0}})["phases"]
        {'forward': 0.0, 'other': 7.0}
    """
    phases = dict(step.get("phases") or {})
    phases["other"] = float(phases.get("other") or 0.0) + float(phases.get("forward") or 0.0)
    phases["forward"] = 0.0
    return {**step, "phases": phases}


def _period(indices: list[int]) -> int | None:
    """The common gap between the long steps' indices (each within 10% or 1), else None.

    Example:
        >>> _period([19, 39, 59]), _period([19, 40, 59]), _period([3, 50])
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


def _phase_extra(
    long: list[Mapping[str, Any]], steps: list[Mapping[str, Any]]
) -> dict[str, float]:
    """Per phase, the long steps' time over that phase's median, summed."""
    out: dict[str, float] = {}
    for phase in _PHASE_WORK.keys() | {"data"}:
        typical = statistics.median(float((s.get("phases") or {}).get(phase) or 0.0)
                                    for s in steps)  # fmt: skip
        out[phase] = sum(
            max(0.0, float((s.get("phases") or {}).get(phase) or 0.0) - typical) for s in long
        )
    return out


def _sampled(session: Mapping[str, Any]) -> str:
    """What the detailed steps saw of the long ones (a detailed long step is left out of the
    tree and of the sampled lines, which describe the typical step).

    Example:
        >>> _sampled({"config": {"detail": {"outlier_steps": [40]}}})
        'detailed step 40 was one: the tree and the sampled lines leave it out (they describe the typical step)'
    """
    left = ((session.get("config") or {}).get("detail") or {}).get("outlier_steps") or []
    if not left:
        return ("no detailed step was one: `torchdoctor run --detail always` records every "
                "step in full (it costs more)")  # fmt: skip
    calls = session.get("long_step_calls") or []
    if calls:  # the user lines model calls ran under, innermost first: the evaluation's own
        most = max(float(r["extra_ms"]) for r in calls)
        row = max((r for r in calls if float(r["extra_ms"]) >= 0.99 * most),
                  key=lambda r: r.get("function") != "<module>")  # (not the script's own call)
        return (f"in detailed step{'s' if len(left) > 1 else ''} "
                f"{', '.join(str(i) for i in left[:4])}, the model calls under "
                f"{row['location']} `{str(row.get('code') or '')[:60]}` took "
                f"{fmt_ms(float(row['extra_ms']))} more than in a typical step")  # fmt: skip
    which = ", ".join(str(i) for i in left[:4])
    return (f"detailed step{'s' if len(left) > 1 else ''} {which} "
            f"{'were' if len(left) > 1 else 'was'} one: the tree and the sampled lines leave "
            f"{'them' if len(left) > 1 else 'it'} out (they describe the typical step)")  # fmt: skip


def periodic_steps(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when rare long steps (>= 2x the median) hold >= 3% of the run's time."""
    recorded = [s for s in session.get("steps") or () if s.get("wall_ms") is not None]
    steps = [s for s in recorded if not s.get("detailed")]  # (hooks make detailed ones slower)
    if len(steps) < MIN_STEPS or one_step_run(session):
        return []
    long, median = _long_steps(steps)
    # detailed steps left out of the tree for their length are long steps too (in light
    # steps' terms: their forward counted with the work between steps)
    left = set(((session.get("config") or {}).get("detail") or {}).get("outlier_steps") or ())
    long += [_as_light(s) for s in recorded if s.get("detailed") and s.get("index") in left]
    long.sort(key=lambda s: int(s.get("index", 0)))
    if len(long) < 2 or len(long) > MAX_SHARE_OF_STEPS * len(recorded):
        return []
    indices = [int(s.get("index", 0)) for s in long]
    period = _period(indices)
    ratio = statistics.median(float(s["wall_ms"]) for s in long) / median
    if period is None and (len(long) < 3 and ratio < RARE_LONG):
        return []  # (two steps at no common period: worth a word only when far longer)
    extra = sum(float(s["wall_ms"]) - median for s in long)
    total = sum(float(s["wall_ms"]) for s in recorded)
    if extra < MIN_SHARE_OF_RUN * total:
        return []
    phases = _phase_extra(long, steps)
    phase = max(phases, key=lambda p: phases[p])
    if phase == "data":
        return []  # (workers restarted at every epoch: the data-loading rule's)
    where = "between steps" if phase == "other" else f"in the {phase} phase"
    share = 100.0 * extra / total
    title = (
        f"Every {period} steps a step takes {ratio:.1f}x the median: periodic work"
        if period
        else f"{len(long)} of {len(recorded)} steps take {ratio:.1f}x the median: work"
    ) + f" {where} is {share:.0f}% of the run"
    shown = ", ".join(str(i) for i in indices[:6]) + (", ..." if len(indices) > 6 else "")
    walls = [float(s["wall_ms"]) for s in long]
    per_step = extra / len(steps)
    item = Advice(
        rule="periodic-steps",
        title=title,
        confidence="medium",
        evidence=[
            f"steps {shown} (of {len(recorded)}): {fmt_ms(min(walls))} to "
            f"{fmt_ms(max(walls))} against a median step of {fmt_ms(median)}",
            f"their extra time, {fmt_ms(extra)} over the run ({share:.0f}% of it, "
            f"{fmt_ms(per_step)} per step on average), is {_PHASE_WORK[phase]}: "
            f"+{fmt_ms(phases[phase] / len(long))} per long step",
            _sampled(session),
        ],
        fix="If it is an evaluation, a checkpoint or sample generation every N steps: run it "
        "less often, make it cheaper (a smaller evaluation set, a larger evaluation batch, "
        "torch.inference_mode()), or move it to another process. If it is meant to run this "
        "often, it is the price of that; the tree and the median step leave such steps out.",
        references=["torch.inference_mode"],
        cause="periodic-work",
    )
    # measured: their extra time per step; half of it saved by doing the work half as often
    item.estimated_saving_ms = per_step / 2
    item.saving_range_ms = (per_step / 2, per_step)
    item.heat = min(1.0, extra / total)
    return [item]

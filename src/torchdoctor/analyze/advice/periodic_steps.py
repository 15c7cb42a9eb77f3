"""Rule ``periodic-steps``: a few steps, often every N, take several times the median step.

An evaluation every N steps, a checkpoint, sample generation: the loop's periodic work lands in
one step out of N, which the median step and the tree (made of typical detailed steps, long
ones left out) do not show. Every step's wall time and phases are recorded, light steps
included (``session["steps"]``), so those steps are found in the whole run: their extra time
over the median step, summed over the run, is a measured cost; the phase that holds it says
what kind of work it is. Extra time in the data phase is the data-loading rule's (workers
restarted at every epoch) unless the steps loop over the model (an evaluation's own loader).

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

from torchdoctor.analyze.advice.base import Advice, fmt_ms, numbering_note
from torchdoctor.analyze.advice.cpu_contention import (
    extra_split,
    off_core,
    off_core_advice,
    split_evidence,
    typical_wait_rate,
)
from torchdoctor.analyze.advice.periodic_loops import (
    EVALUATION_FIX,
    LOOP_KNOBS,
    ROLLOUT_FIX,
    SMALL_BATCH_FIX,
    is_evaluation,
    loop_package,
    model_calls,
    rollout_function,
    sampled_text,
    samples_text,
    small_batch_loop,
)
from torchdoctor.analyze.advice.run_long_steps import (  # noqa: F401 (single_long_step's)
    LONG,
    LONG_MS,
    MIN_STEPS,
    described,
    long_steps,
)
from torchdoctor.analyze.advice.step_inputs import model_work
from torchdoctor.analyze.advice.step_period import periodic_indices
from torchdoctor.session_read import step_count

#: long steps are periodic work only when rare: at most this share of the steps
MAX_SHARE_OF_STEPS = 0.15
#: ... or this share when they come at a regular gap of 4 steps or more (Lightning validating
#: every 5 optimizer steps: 7 of 39 steps, 45% of the run; every 3rd step is the loop's shape)
MAX_SHARE_WITH_PERIOD = 0.25
#: ... and worth a word when their extra time is at least this share of the run
MIN_SHARE_OF_RUN = 0.03
#: in an inference loop, a long step's extra time outside the model's calls worth naming
OUTSIDE_SHARE = 0.25
OUTSIDE_TEXT = ("{ms} over the run ({pct:.0f}% of the long steps' extra time) ran outside the "
                "model's calls, before them: the script's own work on the next input (a "
                "feature extractor, a tokenizer, decoding a file)")
OUTSIDE_FIX = (" The work outside the model's calls before them (preparing the next input: a "
               "feature extractor, tokenization) can run ahead of the model: in a DataLoader "
               "with workers, or a background thread.")
#: two long steps at no common period are reported only when this many times the median
RARE_LONG = 4.0

#: what the extra time of each phase is, in the advice's words
PHASE_WORK = {
    "other": "between steps (after the step's update or its last model call, before the next "
    "forward: an evaluation, a checkpoint, logging, sample generation)",
    "forward": "in the forward phase (light steps do not tell the forward from the work "
    "between steps: an evaluation, a checkpoint, logging)",
    "backward": "in the backward phase",
    "optimizer": "in the optimizer step (a scheduler, an extra optimizer pass)",
}
#: ... in the optimizer phase of a run without an optimizer (steps end at backward calls)
_AFTER_BACKWARD = ("after the backward pass (no torch.optim optimizer: a hand-written update, "
                   "then whatever runs before the next forward: an evaluation, a checkpoint)")


def _of(session: Mapping[str, Any], kept: int, among: int) -> str:
    """The steps the long ones were found ``among``: all, or a long run's kept sample (a
    session that does not list every long step of a sampled run).

    Example:
        >>> _of({"config": {"step_records": {"seen": 1029}}}, 771, 771), _of({}, 60, 60)
        ('771 kept of 1,029', '60')
        >>> _of({"config": {"step_records": {"seen": 1029}}}, 771, 1029)
        '1,029'
    """
    seen = step_count(session)
    return f"{kept:,} kept of {seen:,}" if seen > among else f"{among:,}"


def phase_extra(
    long: list[Mapping[str, Any]], steps: list[Mapping[str, Any]]
) -> dict[str, float]:
    """Per phase, the long steps' time over that phase's median, summed.

    Example:
        >>> steps = [{"phases": {"other": 1.0}}] * 9
        >>> phase_extra([{"phases": {"other": 41.0}}], steps)["other"]
        40.0
    """
    out: dict[str, float] = {}
    for phase in (*PHASE_WORK, "data"):  # (an order of their own: ties go to "other", not
        # to whichever phase a set's string hashing put first: PYTHONHASHSEED differs by run)
        typical = statistics.median(float((s.get("phases") or {}).get(phase) or 0.0)
                                    for s in steps)  # fmt: skip
        out[phase] = sum(
            max(0.0, float((s.get("phases") or {}).get(phase) or 0.0) - typical) for s in long
        )
    return out


LOOP_CALLS = 4  # a long step calling the model this many times its typical one's: a loop


def _also(phases: Mapping[str, float], phase: str, long: list[Mapping[str, Any]]) -> str:
    """The other phases holding a quarter of the long steps' extra time (Whisper's loop: the
    encoder, +179 ms, hid the feature extractor between steps, +120 ms).

    Example:
        >>> print(_also({"forward": 180.0, "other": 120.0, "data": 5.0}, "forward", [{}])[:40])
        ; and +120 ms between steps (work outsid
    """
    extra = sum(phases.values())
    return "".join(
        f"; and +{fmt_ms(ms / len(long))} "
        + ("between steps (work outside the model's calls: preparing the next input, a "
           "metric, a checkpoint)" if other == "other" else f"in the {other} phase")
        for other, ms in sorted(phases.items(), key=lambda kv: -kv[1])
        if other != phase and extra > 0 and ms >= 0.25 * extra)  # fmt: skip


def _ratios(long: list[Mapping[str, Any]], median: float) -> str:
    """``4.0x``, or ``2.7x to 348x`` when the long steps differ by over 3x (a 9.5 ms hiccup
    beside a 613 ms rollout read '176.8x', the median of the two, true of neither).

    Example:
        >>> _ratios([{"wall_ms": 9.5}, {"wall_ms": 613.0}], 1.76)
        '5.4x to 348x'
        >>> _ratios([{"wall_ms": 600.0}, {"wall_ms": 2130.0, "detailed": True}], 1.7)
        '352.9x'
    """
    # (a detailed long step carries the profiler's hooks: stable-baselines3's rollout read
    # 2,130 ms detailed against 577 ms light; the light ones tell the length when there are)
    light = [s for s in long if not s.get("detailed")] or long
    walls = sorted(float(s["wall_ms"]) for s in light)
    if walls[-1] <= 3 * walls[0]:
        return f"{statistics.median(walls) / median:.1f}x"
    return f"{walls[0] / median:.1f}x to {walls[-1] / median:.0f}x"


def periodic_steps(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when rare long steps (>= 2x the median) hold >= 3% of the run's time.

    Example:
        >>> steps = [{"index": i, "wall_ms": 90.0 if i % 10 == 9 else 10.0, "detailed": False,
        ...           "phases": {"other": 80.0 if i % 10 == 9 else 1.0}} for i in range(40)]
        >>> periodic_steps({"steps": steps})[0].title[:40]
        'Every 10 steps a step takes 9.0x the med'
    """
    found = long_steps(session)
    if found is None or len(found.long) < 2:  # (a single one: single_long_step.py)
        return []
    recorded, steps, long, median, _ = found
    long, period, phased = periodic_indices(long, median)
    told = described(long)  # (a sampled run's unkept long steps have their wall time alone)
    indices = [int(s.get("index", 0)) for s in long]
    most = MAX_SHARE_WITH_PERIOD if period is not None and period >= 4 else MAX_SHARE_OF_STEPS
    if len(long) > most * found.run_steps(session):
        return []
    ratio = statistics.median(float(s["wall_ms"]) for s in long) / median
    if period is None and (len(long) < 3 and ratio < RARE_LONG):
        return []  # (two steps at no common period: worth a word only when far longer)
    extra = sum(float(s["wall_ms"]) - median for s in long)
    total = found.run_ms(session)  # (the hooks' time left out)
    if extra < MIN_SHARE_OF_RUN * total:
        return []
    phases = phase_extra(told, steps)
    phase = max(phases, key=lambda p: phases[p])
    counted = _long_model_calls(told, steps)  # (light steps count their model calls too)
    evaluating = counted is not None and counted[1] >= 0.5 * (counted[0] - counted[2])
    looping = counted is not None and counted[0] >= LOOP_CALLS * max(1, counted[2])
    if phase == "data" and not (evaluating or looping):  # (a loop of its own over a loader:
        return []  # else workers restarted at every epoch: the data-loading rule's)
    if phase == "data":  # (an evaluation's own loader: mnist_rnn's test() every 100 steps)
        phases["other"] += phases.pop("data")
        phase = "other"
    where = "between steps" if phase == "other" else f"in the {phase} phase"
    what = PHASE_WORK[phase]
    module_steps = (session.get("config") or {}).get("step_boundary") == "module"
    if phase == "forward" and module_steps:  # (light steps hook the outermost modules there)
        what = "in the model's own calls"
    if phase == "optimizer" and (session.get("config") or {}).get("step_boundary") == "backward":
        where = "after the backward pass"  # (no optimizer: steps end at backward() calls)
        what = _AFTER_BACKWARD
    share = 100.0 * extra / total
    at = (indices[-1] - indices[0]) // (period or 1) + 1  # (the steps at its phase)
    head = (
        f"One step in {period} ({len(long)} of {at} at that place) takes {_ratios(long, median)} "
        "the median" if period and phased and len(long) < at else
        f"Every {period} steps a step takes {_ratios(long, median)} the median"
        if period
        else f"{len(long)} of {found.run_steps(session)} steps take {_ratios(long, median)} the median"
    )
    title = f"{head}: {'periodic ' if period else ''}work {where} is {share:.0f}% of the run"
    host = extra_split(told, steps)  # (on a core, waiting for one, blocked: host_time.py)
    off = off_core(host, typical_wait_rate(steps))
    if host is not None and (off == "waiting" or (off == "blocked" and not _calls_explain(
            session, host.wall_ms / len(told)))):  # fmt: skip
        return [off_core_advice(off, host, head, share, long, found.run_steps(session), median,
                                extra / found.light_steps(session),
                                _ddp_wait(session, told, steps))]  # fmt: skip
    loop = small_batch_loop(session)
    if loop is not None:
        title += f": {float(loop['calls_per_step']):.0f} model calls on {samples_text(loop)} each"
        rollout = rollout_function(session)
        if rollout is not None:
            title += f" (a rollout collecting experience: {rollout})"
        elif is_evaluation(loop):
            title += " (an evaluation: the model in eval mode)"
    if loop is None and counted is not None and evaluating:
        title = (f"{head}: {'periodic ' if period else ''}evaluation {where} ({counted[1]} "
                 f"model calls in eval mode per long step, against {counted[2]} in a typical "
                 f"step) is {share:.0f}% of the run")  # fmt: skip
    work = model_work(session, told) if loop is None else None  # (inference: more model)
    if work is not None and work.explains_all:
        title = f"{head}: {work.title}, {share:.0f}% of the run"
    elif work is not None:
        title += f": {work.title}"
    shown = ", ".join(str(i) for i in indices[:6]) + (", ..." if len(indices) > 6 else "")
    walls = [float(s["wall_ms"]) for s in long]
    per_step = extra / found.light_steps(session)
    item = Advice(
        rule="periodic-steps",
        title=title,
        confidence="medium",
        evidence=[
            f"steps {shown} (of {_of(session, len(recorded), found.run_steps(session))}): "
            f"{fmt_ms(min(walls))} to "
            f"{fmt_ms(max(walls))} against a median step of {fmt_ms(median)}"
            + numbering_note(session),
            f"their extra time, {fmt_ms(extra)} over the run ({share:.0f}% of it, "
            f"{fmt_ms(per_step)} per step on average), is {what}: "
            f"+{fmt_ms(phases[phase] / len(told))} per long step" + _also(phases, phase, told),
            sampled_text(session, max(LONG * median, median + LONG_MS)),
        ],
        fix=ROLLOUT_FIX if loop is not None and rollout_function(session) else (
            (EVALUATION_FIX if loop is not None and is_evaluation(loop)
             else SMALL_BATCH_FIX if loop is not None else "")
            + "If it is an evaluation, a checkpoint or sample generation every N steps: run it "
            "less often, make it cheaper (a smaller evaluation set, a larger evaluation batch, "
            "torch.inference_mode()), or move it to another process"
            + LOOP_KNOBS.get(loop_package(session), "")
            + ". If it is meant to run this often, it is the price of that; the tree and the "
            "median step leave such steps out."),
        references=["torch.inference_mode"],
        cause="periodic-work",
    )
    if host is not None and host.cpu_ms < 0.7 * host.wall_ms:  # (a sizeable part off a core)
        item.evidence.insert(2, split_evidence(host))
    if loop is not None:
        calls = float(loop["calls_per_step"])
        each = (
            f"{100 * float(loop['one_sample_share']):.0f}% of them on one sample (a first "
            "input of leading dimension 1)"
            if samples_text(loop) == "one sample"
            else f"on {samples_text(loop)} each (a first input's leading dimension, on average)"
        )
        item.evidence.insert(2, (
            f"a long step calls the model {calls:.0f} times under {loop['location']} "
            + (f"({', '.join(loop['modules'][:3])}) " if loop.get("modules") else "")
            + f"`{str(loop.get('code') or '')[:60]}`, {each}, against "
            f"{float(loop.get('typical_calls') or 0):.0f} in a typical step"
            + (f", {100 * float(loop['eval_share']):.0f}% of them with the model in eval mode"
               if is_evaluation(loop) else "")))  # fmt: skip
    if work is not None:
        item.evidence[2:2] = work.evidence
        outside = phases.get("other", 0.0)  # (Whisper's feature extractor before the encoder)
        if module_steps and phase == "forward" and outside >= OUTSIDE_SHARE * extra:
            item.evidence.insert(3, OUTSIDE_TEXT.format(
                ms=fmt_ms(outside), pct=100 * outside / extra))  # fmt: skip
        if work.explains_all:  # (the model's own work: no saving from running it less often)
            item.fix = work.fix + (OUTSIDE_FIX if module_steps and phase == "forward"
                                         and outside >= OUTSIDE_SHARE * extra else "")  # fmt: skip
            item.heat = min(1.0, extra / total)
            return [item]
        # (some of them: Whisper's encoder in 11 of 36; say that first, then the rest's fix)
        item.fix = work.fix.replace("These steps run", "Some of these steps run", 1) + (
            OUTSIDE_FIX if module_steps and phase == "forward" and outside >= OUTSIDE_SHARE * extra
            else "") + " For the others: " + item.fix[0].lower() + item.fix[1:]
        per_step *= work.rest_extra(told, median) / max(  # (the others' alone)
            1e-9, sum(float(s["wall_ms"]) - median for s in told))
    item.estimated_saving_ms = per_step / 2  # (half saved doing the work half as often)
    item.saving_range_ms = (per_step / 2, per_step)
    item.heat = min(1.0, extra / total)
    return [item]


def _long_model_calls(long: list[Mapping[str, Any]], steps: list[Mapping[str, Any]]) -> tuple[int, int, int] | None:
    """:func:`~torchdoctor.analyze.advice.periodic_loops.model_calls` of the median long step
    (``steps[i].model_calls``, ``eval_calls``: light steps count them too).

    Example:
        >>> long = [{"model_calls": 41, "eval_calls": 40}, {"model_calls": 41, "eval_calls": 40}]
        >>> _long_model_calls(long, [{"model_calls": 1}] * 20)
        (41, 40, 1)
    """
    if not any(s.get("model_calls") for s in long):
        return None
    middle = {key: round(statistics.median(int(s.get(key) or 0) for s in long))
              for key in ("model_calls", "eval_calls")}  # fmt: skip
    return model_calls(middle, steps)


def _calls_explain(session: Mapping[str, Any], extra_ms: float) -> bool:
    """Whether model calls a detailed long step made under one user line took half or more of
    a long step's extra time (``long_step_calls``): the periodic work is the model's, whatever
    else the thread waited on.

    Example:
        >>> rows = [{"location": "t.py:9", "extra_ms": 30.0}]
        >>> _calls_explain({"long_step_calls": rows}, 50.0), _calls_explain({}, 50.0)
        (True, False)
    """
    rows = [r for r in session.get("long_step_calls") or () if not r.get("package")]
    return any(float(r.get("extra_ms") or 0.0) >= 0.5 * extra_ms for r in rows)


def _ddp_wait(session: Mapping[str, Any], long: list, steps: list) -> bool:
    """Under DDP (collectives of a world of 2 or more) the long steps' extra time is mostly in
    backward, where DDP waits for its all-reduce: another rank came late.

    Example:
        >>> steps = [{"wall_ms": 1.0, "phases": {"backward": 0.5}}] * 9
        >>> long = [{"wall_ms": 9.0, "phases": {"backward": 8.3}}]
        >>> _ddp_wait({"collectives": {"world_size": 2}}, long, steps + long)
        True
    """
    comm = session.get("collectives") or {}
    if not isinstance(comm, Mapping) or int(comm.get("world_size") or 1) < 2:
        return False
    typical = sorted(float((s.get("phases") or {}).get("backward") or 0.0) for s in steps)
    median_wall = sorted(float(s.get("wall_ms") or 0.0) for s in steps)[len(steps) // 2]
    base = typical[len(typical) // 2] if typical else 0.0
    extra = sum(float(s.get("wall_ms") or 0.0) - median_wall for s in long)
    in_backward = sum(float((s.get("phases") or {}).get("backward") or 0.0) - base for s in long)
    return extra > 0 and in_backward >= 0.6 * extra

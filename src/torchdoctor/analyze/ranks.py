"""Compare the sessions of the ranks of one distributed run and name the straggler.

Under ``torchrun`` each rank of ``torchdoctor run`` writes its own session. In data-parallel
training the ranks wait for each other in the gradient all-reduce, so their step times come out
nearly equal: the slow rank shows up by *where* the time goes. The rank that does more work
before the collectives (data, forward, optimizer) is the straggler, and the others spend the
same amount extra inside backward (waiting in the all-reduce). So ranks are compared on their
median "busy" time, ``step - backward`` (per step, from each step's own record), and on each
phase; the phase with the largest spread
says what the straggler does more of (``data``: its loader; ``forward``: its inputs or device).

Example:
    >>> def session(rank, data, forward, backward):
    ...     step = data + forward + backward
    ...     return {"environment": {"rank": rank, "world_size": 2},
    ...             "step_ms": {"median": step}, "steps": [{}, {}],
    ...             "phases": {p: {"median": v} for p, v in
    ...                        {"data": data, "forward": forward, "backward": backward,
    ...                         "optimizer": 0.0, "other": 0.0}.items()}}
    >>> result = compare_ranks([session(0, 1.0, 5.0, 14.0), session(1, 9.0, 5.0, 6.0)])
    >>> result["straggler"], result["phase"], round(result["excess_ms"], 1)
    (1, 'data', 8.0)
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.communication import communication
from torchdoctor.analyze.collectives import compare_collectives, describe_communication
from torchdoctor.session_read import PHASES, fmt_ms, median, step_count

__all__ = ["compare_ranks", "describe_missing", "rank_advice", "STRAGGLER_THRESHOLD"]

#: a rank is a straggler when its busy time exceeds the fastest rank's by this fraction of a step
STRAGGLER_THRESHOLD = 0.10


def compare_ranks(sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-rank medians and the straggler verdict of one run's sessions (any order).

    Returns ``{"world_size", "ranks": [{"rank", "step_ms", "busy_ms", "phases", "steps",
    "syncs_per_step"}], "straggler": rank | None, "phase": name | None, "excess_ms",
    "excess_pct", "verdict", "missing": [rank], "stopped": [{"rank", "exit_code", "error"}],
    "communication": ``analyze.collectives.compare_collectives`` or None, "notes": [str],
    "advice": [Advice dict + "ranks"]}``.
    ``excess`` is the straggler's busy time above the fastest rank's, as milliseconds per step
    and as a percentage of the median step.

    Example:
        >>> session = lambda rank, step: {"environment": {"rank": rank, "world_size": 2},
        ...     "steps": [{}], "step_ms": {"median": step}, "phases": {"data": {"median": step - 10}}}
        >>> result = compare_ranks([session(0, 10.0), session(1, 20.0)])
        >>> result["straggler"], result["phase"], result["excess_ms"]
        (1, 'data', 10.0)
    """
    if not sessions:
        raise ValueError("compare_ranks: no sessions given; pass one session per rank")
    rows = []
    for index, session in enumerate(sessions):
        environment = session.get("environment") or {}
        rank = environment.get("rank", index)
        step = median(session.get("step_ms"))
        phases, busy, measured_step = _phases_and_busy(session, step)
        syncs = sum(float(r.get("per_step") or 0.0) for r in session.get("syncs") or ())
        rows.append({
            "rank": rank,
            "step_ms": step,
            "busy_ms": busy,
            "busy_of_step_ms": measured_step,  # the step time busy and phases are from
            "phases": phases,
            "steps": step_count(session),  # (all profiled, not the kept records of a long run)
            "syncs_per_step": syncs,
        })  # fmt: skip
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"]))
    world = max(len(rows), *(int((s.get("environment") or {}).get("world_size") or 0)
                             for s in sessions))  # fmt: skip
    present = {r["rank"] for r in rows}
    result: dict[str, Any] = {
        "world_size": world, "ranks": rows, "straggler": None, "phase": None,
        "excess_ms": 0.0, "excess_pct": 0.0,
        "missing": [r for r in range(world) if r not in present],
        "stopped": [_failure(s, i) for i, s in enumerate(sessions) if _failure(s, i)],
        "communication": compare_collectives(sessions),
    }  # fmt: skip
    missing = world - len(rows)
    measured = [r for r in rows if r["steps"] > 0 and r["step_ms"] > 0]
    idle = [r["rank"] for r in rows if r not in measured]
    if len(measured) < 2:
        result["verdict"] = "fewer than two ranks measured a step: nothing to compare"
        if idle:
            result["verdict"] += f" (ranks {idle} recorded no step)"
        return _with_notes(result, sessions)
    fastest = min(measured, key=lambda r: r["busy_ms"])
    slowest = max(measured, key=lambda r: r["busy_ms"])
    # the steps the busy times come from (detailed ones: slower than the median of all)
    step = sorted(r["busy_of_step_ms"] for r in measured)[len(measured) // 2]
    excess = slowest["busy_ms"] - fastest["busy_ms"]
    spreads = {p: slowest["phases"][p] - fastest["phases"][p] for p in PHASES if p != "backward"}
    phase = max(spreads, key=lambda p: spreads[p])
    result.update(excess_ms=excess, excess_pct=100.0 * excess / step)
    if excess >= STRAGGLER_THRESHOLD * step:
        result.update(straggler=slowest["rank"], phase=phase)
        result["verdict"] = (
            f"rank {slowest['rank']} is the straggler: {fmt_ms(excess)} per step more work than "
            f"rank {fastest['rank']} ({100 * excess / step:.0f}% of a step), most of it in "
            f"{phase} (+{fmt_ms(spreads[phase])}); the other ranks wait for it in backward"
        )
    else:
        result["verdict"] = (
            f"no straggler: the ranks' busy time (step - backward) is within "
            f"{100 * excess / step:.0f}% of a step"
        )
    if idle:
        result["verdict"] += f" (ranks {idle} recorded no step and are left out)"
    if missing > 0:
        result["verdict"] += f" ({missing} of {world} ranks wrote no session)"
    return _with_notes(result, sessions)


def _phases_and_busy(
    session: Mapping[str, Any], step: float
) -> tuple[dict[str, float], float, float]:
    """Per-phase medians, the median busy time (``wall - backward``) and the median step time
    of one rank, all from its detailed steps' own records: one population (the session's step time is the
    median of all steps, light ones included, which are faster on small steps where the
    profiler's hooks are a large share; ``step - backward`` mixed the two), and the one
    whose phases include ``forward`` (a light step has no module hooks to see it begin).
    Sessions without per-step records: the session's phases.

    Example:
        >>> steps = [{"wall_ms": 10.0, "phases": {"backward": 6.0, "forward": 4.0}},
        ...          {"wall_ms": 12.0, "phases": {"backward": 6.0, "forward": 6.0}},
        ...          {"wall_ms": 11.0, "phases": {"backward": 6.0, "forward": 5.0}},
        ...          {"wall_ms": 8.0, "phases": {"backward": 6.0}, "detailed": False}]
        >>> phases, busy, step = _phases_and_busy({"steps": steps}, 10.0)
        >>> phases["forward"], busy, step
        (5.0, 5.0, 11.0)
    """
    steps = [
        s for s in session.get("steps") or ()
        if isinstance(s.get("phases"), Mapping) and s.get("wall_ms") is not None
        and s.get("detailed", True)
    ]  # fmt: skip
    if steps:
        phases = {p: statistics.median(float(s["phases"].get(p) or 0.0) for s in steps)
                  for p in PHASES}  # fmt: skip
        busy = statistics.median(
            max(0.0, float(s["wall_ms"]) - float(s["phases"].get("backward") or 0.0)) for s in steps
        )
        return phases, busy, statistics.median(float(s["wall_ms"]) for s in steps)
    phases = {p: median((session.get("phases") or {}).get(p)) for p in PHASES}
    return phases, max(0.0, step - phases["backward"]), step


def rank_advice(sessions: Sequence[Mapping[str, Any]], comm: Mapping[str, Any] | None) -> list:
    """The ``communication`` rule on every rank's session, told the cross-rank waits; the
    same advice for several ranks is listed once with their ranks.

    Example:
        >>> rank_advice([{"collectives": None}], None)
        []
    """
    if not comm:
        return []
    waits = {r["rank"]: r for r in comm["ranks"]}
    merged: dict[str, dict[str, Any]] = {}
    for index, session in enumerate(sessions):
        section = session.get("collectives")
        rank = (session.get("environment") or {}).get("rank", index)
        if not section or rank not in waits:
            continue
        cross = {"late_rank": comm.get("late_rank"), "late_phase": comm.get("late_phase"),
                 "wait_ms_per_step": waits[rank].get("wait_ms_per_step")}  # fmt: skip
        view = {**session, "collectives": {**section, "cross_rank": cross}}
        for advice in communication(view):
            entry = merged.setdefault(advice.title, {**advice.to_dict(), "ranks": []})
            entry["ranks"].append(rank)
    return list(merged.values())


def _with_notes(result: dict[str, Any], sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    result["advice"] = rank_advice(sessions, result["communication"])
    comm = result["communication"]
    same = comm is not None and comm.get("late_rank") == result.get("straggler")
    result["notes"] = describe_missing(result) + describe_communication(
        comm, result.get("phase") if same else None
    )
    return result


def _failure(session: Mapping[str, Any], index: int) -> dict[str, Any] | None:
    """``{"rank", "exit_code", "error"}`` for a rank whose script failed or was stopped."""
    config = session.get("config") or {}
    code = config.get("exit_code")
    error = session.get("error")
    if not error and not code:
        return None
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    named = [line for line in lines if _EXCEPTION_LINE.match(line)]
    last = (named or lines or [f"exit code {code}"])[-1]
    rank = (session.get("environment") or {}).get("rank", index)
    return {"rank": rank, "exit_code": code, "error": last[:240]}


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Terminated)\b")


def describe_missing(result: Mapping[str, Any]) -> list[str]:
    """Sentences naming the ranks with no session and the ranks whose script did not finish.

    Example:
        >>> describe_missing({"missing": [1], "stopped": [], "world_size": 2})
        ['rank 1 is missing: no session reached rank 0 (it died, or neither the process \
group store nor a shared --out folder brought its session)']
    """
    lines = []
    for rank in result.get("missing") or ():
        lines.append(f"rank {rank} is missing: no session reached rank 0 (it died, or neither "
                     "the process group store nor a shared --out folder brought its session)")  # fmt: skip
    for failure in result.get("stopped") or ():
        lines.append(f"rank {failure['rank']} did not finish (exit code {failure['exit_code']}): "
                     f"{failure['error']}; the rest of its run is missing: its numbers cover the "
                     "steps before it stopped")  # fmt: skip
    return lines

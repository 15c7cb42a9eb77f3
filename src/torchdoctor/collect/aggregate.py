"""Summarize one step's resolved events: per-node forward/backward time, calls, phases.

Pure functions over plain numbers (nanoseconds in, milliseconds out); the profiler calls
:func:`summarize_step` once per step, after resolving the clock tokens, and keeps only the
summary (the raw events of a step are dropped, so memory stays bounded on long runs).

Example:
    >>> from torchdoctor.collect.records import ForwardCall
    >>> s = summarize_step(
    ...     parent=[-1, 0], forward=[ForwardCall(1, 0.0, 2e6)], marks=[], step=(0.0, 4e6),
    ...     segments=[(0.0, "forward"), (2e6, "other")],
    ... )
    >>> s["wall_ms"], s["forward"][1], s["phases"]["other"]
    (4.0, 2.0, 2.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchdoctor.collect.backward import backward_intervals
from torchdoctor.collect.phases import phase_durations
from torchdoctor.collect.records import RECOMPUTED, BackwardMark, ForwardCall


def summarize_step(
    *,
    parent: Sequence[int],
    forward: Sequence[ForwardCall],
    marks: Sequence[BackwardMark],
    step: tuple[float, float],
    segments: Sequence[tuple[float, str]],
    activation: dict[int, int] | None = None,
    identical: dict[int, int] | None = None,
    peak_memory_bytes: int | None = None,
    fingerprinted: bool = True,
) -> dict[str, Any]:
    """Per-node inclusive forward and backward ms, calls, and phase ms of one step
    (``fingerprinted``: module inputs were compared, so ``identical`` counts the calls whose
    inputs repeated an earlier call's).

    Example:
        >>> from torchdoctor.collect.records import MarkKind
        >>> marks = [BackwardMark(1, 1, MarkKind.START, 4e6), BackwardMark(1, 1, MarkKind.END, 5e6)]
        >>> s = summarize_step(parent=[-1, 0], forward=[ForwardCall(1, 1e6, 3e6)], marks=marks,
        ...                    step=(0.0, 6e6), segments=[(0.0, "forward"), (4e6, "backward")])
        >>> s["wall_ms"], s["forward"], s["backward"], s["calls"], s["phases"]["backward"]
        (6.0, {1: 2.0}, {1: 1.0}, {1: 1}, 2.0)
    """
    start, end = step
    fwd: dict[int, float] = {}
    calls: dict[int, int] = {}
    recomputed: dict[int, float] = {}
    for node, s, e, piece in forward:
        if piece == RECOMPUTED:  # re-run inside backward (activation checkpointing)
            recomputed[node] = recomputed.get(node, 0.0) + max(0.0, e - s) / 1e6
            continue
        if piece:  # a piece of a region call cut by a backward pass run inside it
            calls.setdefault(node, 0)
        else:
            calls[node] = calls.get(node, 0) + 1
        fwd[node] = fwd.get(node, 0.0) + max(0.0, e - s) / 1e6
    finals = backward_intervals(parent, marks, (start, end))
    bwd = {node: sum(e - s for s, e in v) / 1e6 for node, v in finals.items() if node != 0}
    for node, *_ in marks:  # a region entered during backward counts as a call
        calls.setdefault(node, 0)
    return {
        "wall_ms": max(0.0, end - start) / 1e6,
        "phases": phase_durations(list(segments), end),
        "forward": fwd,
        "backward": bwd,
        "calls": calls,
        "recomputed": recomputed,
        "activation": dict(activation) if activation is not None else None,
        "identical": dict(identical or {}),
        "fingerprinted": fingerprinted,
        "peak_memory_bytes": peak_memory_bytes,
        "_intervals": finals,
        "detailed": True,
    }


def light_step(
    step: tuple[float, float],
    segments: Sequence[tuple[float, str]],
    peak_memory_bytes: int | None = None,
) -> dict[str, Any]:
    """The summary of a light step (outside detail windows): wall time and phases only.

    Example:
        >>> s = light_step((0.0, 2e6), [(0.0, "forward"), (1.5e6, "backward")])
        >>> s["wall_ms"], s["phases"]["backward"], s["detailed"]
        (2.0, 0.5, False)
    """
    start, end = step
    return {
        "wall_ms": max(0.0, end - start) / 1e6,
        "phases": phase_durations(list(segments), end),
        "forward": {},
        "backward": {},
        "calls": {},
        "activation": None,
        "identical": {},
        "peak_memory_bytes": peak_memory_bytes,
        "detailed": False,
    }


def step_timeline(
    summary_intervals: dict[int, list[tuple[float, float]]],
    *,
    forward: Sequence[ForwardCall],
    segments: Sequence[tuple[float, str]],
    step: tuple[float, float],
    path: Sequence[str],
    kind: Sequence[str],
    depth: Sequence[int],
) -> list[dict[str, Any]]:
    """Chrome-trace-like events of one step: phases, forward/region calls, backward spans.

    Example:
        >>> step_timeline({}, forward=[ForwardCall(1, 1e3, 3e3)], segments=[(0.0, "forward")],
        ...               step=(0.0, 4e3), path=["", "net"], kind=["root", "module"],
        ...               depth=[0, 1])[1]["dur_us"]
        2.0
    """
    start, end = step
    events: list[dict[str, Any]] = []
    for (t, phase), nxt in zip(segments, [*segments[1:], (end, "")]):
        if nxt[0] > t:
            events.append(_event(phase, "phase", t - start, nxt[0] - t, 0))
    for node, s, e, piece in forward:  # a piece of a region call is drawn like a call
        if piece == RECOMPUTED:  # (inside the backward span drawn for the module)
            continue
        cat = "region" if kind[node] == "region" else "forward"
        events.append(_event(path[node], cat, s - start, e - s, depth[node]))
    for node, spans in summary_intervals.items():
        if node == 0:
            continue
        for s, e in spans:
            events.append(_event(path[node], "backward", s - start, e - s, depth[node]))
    events.sort(key=lambda ev: (ev["ts_us"], ev["depth"]))
    return events


#: calls and backward spans a timeline keeps at most (phases apart): a loop of small modules
#: makes 100,000s of calls a step (pytorch/examples time_sequence_prediction: 126,000 events,
#: an 11 MB session written at every checkpoint)
MAX_TIMELINE_EVENTS = 20_000


def bounded_timeline(
    events: list[dict[str, Any]], notes: list[str], limit: int | None = None
) -> list[dict[str, Any]]:
    """``events`` (sorted by :func:`step_timeline`) with at most ``limit`` calls and spans:
    every one down to the deepest level of the module tree that fits, then the deeper ones in
    time order while room is left; what was left out is said in ``notes``.

    Example:
        >>> calls = [_event("net", "forward", 0, 9e3, 1)] + [
        ...     _event("net.cell", "forward", i * 1e3, 1e3, 2) for i in range(9)]
        >>> notes = []
        >>> [e["ts_us"] for e in bounded_timeline(calls, notes, limit=4)]
        [0.0, 0.0, 1.0, 2.0]
        >>> print(notes[0])
        the timeline keeps 4 of the step's 10 calls and backward spans: all down to depth 1 of the module tree, the deeper ones of its first 3.0 us
    """
    limit = MAX_TIMELINE_EVENTS if limit is None else limit
    calls = sum(event["cat"] != "phase" for event in events)
    if calls <= limit:
        return events
    per_depth: dict[int, int] = {}
    for event in events:
        if event["cat"] != "phase":
            per_depth[event["depth"]] = per_depth.get(event["depth"], 0) + 1
    depth, room = 0, limit
    for level in sorted(per_depth):
        if per_depth[level] > room:
            break
        depth, room = level, room - per_depth[level]
    kept, cut_us = [], 0.0
    for event in events:
        if event["cat"] == "phase" or event["depth"] <= depth:
            kept.append(event)
        elif room > 0:
            kept.append(event)
            room -= 1
        elif not cut_us:
            cut_us = event["ts_us"]
    levels = f"all down to depth {depth} of the module tree, the deeper ones" if depth else "those"
    notes.append(
        f"the timeline keeps {limit:,} of the step's {calls:,} calls and backward spans: "
        f"{levels} of its first {_duration(cut_us)}"
    )
    return kept


def _duration(us: float) -> str:
    return f"{us / 1e3:,.1f} ms" if us >= 1e3 else f"{us:,.1f} us"


def _event(name: str, cat: str, ts_ns: float, dur_ns: float, depth: int) -> dict[str, Any]:
    return {
        "name": name,
        "cat": cat,
        "ts_us": round(ts_ns / 1e3, 3),
        "dur_us": round(dur_ns / 1e3, 3),
        "depth": depth,
    }

"""Turn a :class:`~torchdoctor.collect.collectives.CollectiveTimer`'s calls into the session's
plain-data ``collectives`` section (layout in docs/session-schema.md).

Only calls made during the measured steps count (warm-up excluded; the whole run when it is one
step). Per (kind, call site, group): calls and milliseconds per step, exposed milliseconds per
step, payload bytes; in all: the time in collectives, its share of the step, and the wall-clock
arrivals that ``analyze.collectives`` compares across ranks.

Example:
    >>> from torchdoctor.collect.collectives import CollectiveTimer
    >>> section = summarize_collectives(CollectiveTimer(), {"steps": [{}], "config": {}})
    >>> section["calls_per_step"], section["total_ms_per_step"]
    (0.0, 0.0)
"""

from __future__ import annotations

import linecache
import socket
from collections import Counter
from collections.abc import Mapping
from typing import Any

from torchdoctor.collect.collectives import POINT_TO_POINT
from torchdoctor.session import stat

__all__ = ["summarize_collectives", "MAX_ARRIVALS"]

#: arrivals kept per rank for the cross-rank comparison (the first ones of the measured steps)
MAX_ARRIVALS = 5000


def _measured(timer: Any, session: Mapping[str, Any]) -> tuple[list[Any], int]:
    config = session.get("config") or {}
    steps = len(session.get("steps") or ())
    if config.get("step_boundary") == "whole_run" or steps == 0:
        return [c for c in timer.records if c.end is not None], max(1, steps)
    first = int(config.get("warmup") or 0)
    last = first + steps
    return [c for c in timer.records if c.end is not None and first <= c.step < last], steps


def _ddp_tails(calls: list[Any]) -> None:
    """Per step, the exposed part of DDP's bucket all-reduces: the last bucket's tail."""
    by_step: dict[int, list[Any]] = {}
    for call in calls:
        if call.ddp:
            by_step.setdefault(call.step, []).append(call)
    for bucket_calls in by_step.values():
        last = max(bucket_calls, key=lambda c: c.start)
        last.exposed_ns = max(0, max(c.end for c in bucket_calls) - last.start)


def busy_ms(calls: list[Any]) -> float:
    """Milliseconds covered by the calls' ``[start, end]`` intervals (overlaps counted once:
    DDP buckets and async calls run side by side).

    Example:
        >>> class C:
        ...     def __init__(self, start, end): self.start, self.end = start, end
        >>> busy_ms([C(0, 2_000_000), C(1_000_000, 3_000_000), C(5_000_000, 6_000_000)])
        4.0
    """
    total, reach = 0, None
    for call in sorted(calls, key=lambda c: c.start):
        if reach is None or call.start > reach:
            total += call.end - call.start
            reach = call.end
        elif call.end > reach:
            total += call.end - reach
            reach = call.end
    return total / 1e6


def _key(call: Any) -> tuple:
    return (call.kind, call.site, call.group, call.ddp, call.module)


def _site(site: tuple) -> dict[str, Any]:
    file, line, function = site
    code = linecache.getline(file, line).strip() if line else ""
    return {"file": file, "line": line, "function": function, "code": code or None}


def summarize_collectives(timer: Any, session: Mapping[str, Any]) -> dict[str, Any]:
    """The ``collectives`` section for a session (call after the timer stopped).

    Example:
        >>> from torchdoctor.collect.collectives import Call, CollectiveTimer
        >>> timer = CollectiveTimer()
        >>> call = Call("all_reduce", ("t.py", 3, "f"), "default", False, 4, seq=0)
        >>> call.start, call.end, call.exposed_ns = 0, 2_000_000, 2_000_000
        >>> _ = timer.keep(call)
        >>> section = summarize_collectives(timer, {"steps": [], "step_ms": {"mean": 8.0}})
        >>> section["total_ms_per_step"], section["share_pct"], section["by_site"][0]["kind"]
        (2.0, 25.0, 'all_reduce')
    """
    calls, steps = _measured(timer, session)
    cuda = bool(getattr(timer, "cuda_timed", False))  # durations only: no common time line
    if not cuda:
        _ddp_tails(calls)
    groups: dict[tuple, list[Any]] = {}
    for call in calls:
        groups.setdefault(_key(call), []).append(call)
    rows = []
    for (kind, site, group, ddp, module), members in groups.items():
        durations = [(c.end - c.start) / 1e6 for c in members]
        phases = [c.phase for c in members]
        nbytes = [c.bytes for c in members if c.bytes is not None]
        rows.append({
            "kind": kind, "site": _site(site), "group": group, "ddp_bucket": ddp, "module": module,
            "async": any(c.is_async for c in members),
            "calls_per_step": len(members) / steps,
            "ms_per_step": (sum(durations) if cuda else busy_ms(members)) / steps,
            "exposed_ms_per_step": sum(c.exposed_ns for c in members) / 1e6 / steps,
            "ms_per_call": stat(durations),
            "bytes_per_call": sum(nbytes) / len(nbytes) if nbytes else None,
            "phase": Counter(phases).most_common(1)[0][0],  # (ties: the first seen)
        })  # fmt: skip
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["ms_per_step"])
    index = {key: order.index(i) for i, key in enumerate(groups)}
    rows = [rows[i] for i in order]
    arrivals = [
        [c.group, c.seq, index[_key(c)], c.arrival_ns, c.phase]
        for c in sorted(calls, key=lambda c: c.arrival_ns)
        if c.kind not in POINT_TO_POINT
    ][:MAX_ARRIVALS]  # fmt: skip
    step = session.get("step_ms") or {}
    step_ms = float(step.get("mean") or step.get("median") or 0.0)
    for row in rows:  # a wait measured past the completion callback: not more than in flight
        row["exposed_ms_per_step"] = min(row["exposed_ms_per_step"], row["ms_per_step"])
    total = sum(r["ms_per_step"] for r in rows) if cuda else busy_ms(calls) / steps
    exposed = min(total, sum(r["exposed_ms_per_step"] for r in rows))
    notes = list(timer.notes)
    if cuda:
        notes.append("CUDA events time each call on its stream; exposed time is not told apart")
    if timer.dropped:
        notes.append(f"{timer.dropped} calls beyond the first {len(timer.records)} were not kept")
    if any(r["async"] and not r["ddp_bucket"] and r["exposed_ms_per_step"] == 0 for r in rows):
        notes.append("async collectives never waited on with Work.wait() count as not exposed")
    return {
        "timing": "cuda_events" if cuda else "perf_counter",
        "backend": timer.backend, "rank": timer.rank, "world_size": timer.world_size,
        "host": socket.gethostname(), "steps": steps,
        "calls_per_step": len(calls) / steps,
        "total_ms_per_step": total, "exposed_ms_per_step": exposed,
        "share_pct": 100.0 * total / step_ms if step_ms > 0 else None,
        "exposed_pct": 100.0 * exposed / step_ms if step_ms > 0 else None,
        "bytes_per_step": sum(c.bytes or 0 for c in calls) / steps,
        "by_site": rows, "ddp": [dict(d) for d in timer.ddp],
        "arrivals": arrivals, "notes": notes,
    }  # fmt: skip

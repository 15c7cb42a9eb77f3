"""Communication across the ranks of one run: time in collectives, who waits for whom.

Every rank's session carries a ``collectives`` section (collect/collectives_summary.py): time in
collectives per step, the exposed part, per call site rows, and the wall-clock arrival of each
collective call, numbered per process group (the n-th call of a group is the same collective on
every rank). Comparing arrivals of the same call tells the wait: a rank that arrives first waits
for the last one. Clocks agree on one host; across hosts they differ by the hosts' clock offset
(NTP: typically well under a millisecond, sometimes more), which the result says.

Example:
    >>> def rank(r, arrivals, ms):
    ...     rows = [{"kind": "all_reduce", "site": {"file": "train.py", "line": 9},
    ...              "ms_per_step": ms, "exposed_ms_per_step": ms, "calls_per_step": 1.0,
    ...              "ddp_bucket": False, "bytes_per_call": 4.0, "phase": "backward"}]
    ...     return {"environment": {"rank": r}, "step_ms": {"median": 10.0},
    ...             "collectives": {"steps": 2, "total_ms_per_step": ms,
    ...                             "exposed_ms_per_step": ms, "share_pct": 10 * ms,
    ...                             "host": "h", "by_site": rows,
    ...                             "arrivals": [["default", i, 0, t, "backward"]
    ...                                          for i, t in enumerate(arrivals)]}}
    >>> result = compare_collectives([rank(0, [0, 10_000_000], 5.0), rank(1, [4_000_000,
    ...                               14_000_000], 1.0)])
    >>> result["late_rank"], result["ranks"][0]["wait_ms_per_step"]
    (1, 4.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.session_read import fmt_ms

__all__ = [
    "compare_collectives",
    "covered_ms",
    "describe_communication",
    "site_label",
    "LATE_THRESHOLD",
]

#: a rank is named "late" when the others wait for it at least this share of their step
LATE_THRESHOLD = 0.05


def site_label(row: Mapping[str, Any]) -> str:
    """``kind at file:line [in module]`` (or DDP's buckets) for a ``by_site`` row.

    Example:
        >>> site_label({"kind": "all_reduce", "site": {"file": "/a/train.py", "line": 9}})
        'all_reduce at train.py:9'
    """
    if row.get("ddp_bucket"):
        return "all_reduce of DDP gradient buckets"
    site = row.get("site") or {}
    name = str(site.get("file") or "?").replace("\\", "/").rsplit("/", 1)[-1]
    module = f" in {row['module']}" if row.get("module") else ""
    return f"{row.get('kind')} at {name}:{site.get('line')}{module}"


def covered_ms(intervals: Sequence[tuple[int, int]]) -> float:
    """Milliseconds covered by ``(start_ns, end_ns)`` intervals, overlaps once (a rank that
    launches two async bucket all-reduces back to back waits once, not twice).

    Example:
        >>> covered_ms([(0, 2_000_000), (1_000_000, 3_000_000), (5_000_000, 5_500_000)])
        3.5
    """
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total, reach = total + end - start, end
        elif end > reach:
            total, reach = total + end - reach, end
    return total / 1e6


def _rank(session: Mapping[str, Any], index: int) -> Any:
    return (session.get("environment") or {}).get("rank", index)


def _step(session: Mapping[str, Any]) -> float:
    step = session.get("step_ms") or {}
    return float(step.get("mean") or step.get("median") or 0.0)


def compare_collectives(sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Per-rank communication and the cross-rank wait; None when no session timed collectives.

    Returns ``{"ranks": [{"rank", "comm_ms_per_step", "share_pct", "exposed_ms_per_step",
    "exposed_pct", "wait_ms_per_step", "late_ms_per_step"}], "slowest": {...} | None,
    "sites": [{"label", "ms_per_step", "median_skew_ms", ...}], "late_rank", "late_phase",
    "matched_calls", "hosts", "clock_note"}``. ``wait`` is the time a rank arrived before the
    last rank at the same collective; ``late`` is how long the first rank waited for this one
    (as the last); both per step, overlapping intervals counted once.

    Example:
        >>> compare_collectives([{"environment": {"rank": 0}}]) is None  # nothing timed
        True
    """
    timed = [(i, s) for i, s in enumerate(sessions) if s.get("collectives")]
    if not timed:
        return None
    arrivals: dict[tuple, dict[Any, tuple]] = {}
    rows_of: dict[Any, list] = {}
    for index, session in timed:
        section = session["collectives"]
        rank = _rank(session, index)
        rows_of[rank] = section.get("by_site") or []
        for group, seq, row, when, phase in section.get("arrivals") or ():
            arrivals.setdefault((group, seq), {})[rank] = (int(when), row, phase)
    wait: dict[Any, list[tuple[int, int]]] = {_rank(s, i): [] for i, s in timed}
    late: dict[Any, list[tuple[int, int]]] = {r: [] for r in wait}
    late_phase: dict[Any, dict[str, float]] = {r: {} for r in wait}
    per_site: dict[tuple, list[float]] = {}
    matched = 0
    for by_rank in arrivals.values():
        if len(by_rank) < 2:
            continue
        matched += 1
        last_rank = max(by_rank, key=lambda r: by_rank[r][0])
        last, first = by_rank[last_rank][0], min(v[0] for v in by_rank.values())
        for rank, (when, _, _) in by_rank.items():
            wait[rank].append((when, last))
        late[last_rank].append((first, last))
        phase = by_rank[last_rank][2]
        late_phase[last_rank][phase] = late_phase[last_rank].get(phase, 0.0) + (last - first)
        row = by_rank[last_rank][1]
        rows = rows_of.get(last_rank) or []
        if 0 <= row < len(rows):
            key = (site_label(rows[row]),)
            per_site.setdefault(key, []).append((last - first) / 1e6)
    ranks = []
    for index, session in timed:
        section = session["collectives"]
        rank = _rank(session, index)
        steps = max(1, int(section.get("steps") or 1))
        ranks.append({
            "rank": rank,
            "comm_ms_per_step": float(section.get("total_ms_per_step") or 0.0),
            "share_pct": section.get("share_pct"),
            "exposed_ms_per_step": float(section.get("exposed_ms_per_step") or 0.0),
            "exposed_pct": section.get("exposed_pct"),
            "wait_ms_per_step": covered_ms(wait[rank]) / steps if matched else None,
            "late_ms_per_step": covered_ms(late[rank]) / steps if matched else None,
            "step_ms": _step(session),
        })  # fmt: skip
    ranks.sort(key=lambda r: (r["rank"] is None, r["rank"]))
    sites: dict[str, dict[str, Any]] = {}
    for rows in rows_of.values():
        for row in rows:
            entry = sites.setdefault(site_label(row), {"label": site_label(row), "ms": [],
                                                       "row": row})  # fmt: skip
            entry["ms"].append(float(row.get("ms_per_step") or 0.0))
    site_rows = []
    for label, entry in sites.items():
        skews = sorted(per_site.get((label,), []))
        site_rows.append({
            "label": label, "kind": entry["row"].get("kind"),
            "ms_per_step": max(entry["ms"]),  # the rank that spends most in it
            "calls_per_step": entry["row"].get("calls_per_step"),
            "bytes_per_call": entry["row"].get("bytes_per_call"),
            "phase": entry["row"].get("phase"), "ddp_bucket": bool(entry["row"].get("ddp_bucket")),
            "median_skew_ms": skews[len(skews) // 2] if skews else None,
        })  # fmt: skip
    site_rows.sort(key=lambda r: -r["ms_per_step"])
    hosts = sorted({str(s["collectives"].get("host")) for _, s in timed})
    result: dict[str, Any] = {
        "ranks": ranks, "sites": site_rows, "slowest": site_rows[0] if site_rows else None,
        "matched_calls": matched, "hosts": hosts, "late_rank": None, "late_phase": None,
        "clock_note": None if len(hosts) < 2 else (
            f"ranks ran on {len(hosts)} hosts: arrival skews include the hosts' clock offset"),
    }  # fmt: skip
    if matched:
        worst = max(ranks, key=lambda r: r["late_ms_per_step"] or 0.0)
        step = sorted(r["step_ms"] for r in ranks)[len(ranks) // 2]
        if step > 0 and (worst["late_ms_per_step"] or 0.0) >= LATE_THRESHOLD * step:
            result["late_rank"] = worst["rank"]
            phases = late_phase[worst["rank"]]
            result["late_phase"] = max(phases, key=lambda p: phases[p]) if phases else None
    return result


def describe_communication(comm: Mapping[str, Any] | None, phase: str | None = None) -> list[str]:
    """Sentences for people: communication share, slowest collective, the late rank.

    ``phase`` is where the straggler spends its extra time (``analyze.ranks``), if known.

    Example:
        >>> comm = {"ranks": [{"rank": 0, "comm_ms_per_step": 2.0, "share_pct": 20.0,
        ...          "exposed_ms_per_step": 1.0, "exposed_pct": 10.0, "late_ms_per_step": 0.0}],
        ...         "slowest": {"label": "all_reduce at t.py:3", "ms_per_step": 2.0,
        ...                     "median_skew_ms": None, "calls_per_step": 1.0},
        ...         "late_rank": None, "clock_note": None}
        >>> describe_communication(comm)[0]
        'communication: 2 ms per step in collectives (20% of the step), 1 ms of it exposed (10%), median over ranks'
    """
    if not comm or not comm.get("ranks"):
        return []

    def mid(key: str) -> float:
        values = sorted(float(r.get(key) or 0.0) for r in comm["ranks"])
        return values[len(values) // 2]

    lines = [
        f"communication: {fmt_ms(mid('comm_ms_per_step'))} per step in collectives "
        f"({mid('share_pct'):.3g}% of the step), {fmt_ms(mid('exposed_ms_per_step'))} of it "
        f"exposed ({mid('exposed_pct'):.3g}%), median over ranks"
    ]
    slowest = comm.get("slowest")
    if slowest:
        skew = slowest.get("median_skew_ms")
        wait = f", arrival skew median {fmt_ms(skew)}" if skew is not None else ""
        lines.append(f"slowest collective: {slowest['label']}, {fmt_ms(slowest['ms_per_step'])} "
                     f"per step ({slowest.get('calls_per_step') or 0:.3g} calls){wait}")  # fmt: skip
    late = comm.get("late_rank")
    if late is not None:
        row = next(r for r in comm["ranks"] if r["rank"] == late)
        where = f" at collectives in {comm['late_phase']}" if comm.get("late_phase") else ""
        extra = f"; it spends its extra time in {phase}" if phase else ""
        lines.append(f"imbalance: rank {late} arrives last; the others wait "
                     f"{fmt_ms(row['late_ms_per_step'])} per step for it{where}{extra}")  # fmt: skip
    if comm.get("clock_note"):
        lines.append(comm["clock_note"])
    return lines

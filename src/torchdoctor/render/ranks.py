"""Text table of a distributed run's ranks (the result of ``analyze.ranks.compare_ranks``).

Example:
    >>> result = {"ranks": [{"rank": 0, "step_ms": 20.0, "busy_ms": 6.0, "steps": 5,
    ...     "syncs_per_step": 0.0, "phases": {"data": 1.0, "forward": 5.0, "backward": 14.0,
    ...     "optimizer": 0.0, "other": 0.0}}], "verdict": "one rank only: nothing to compare",
    ...     "straggler": None}
    >>> print(render_ranks_text(result).splitlines()[0])
    rank  step ms  detailed ms  busy ms  data ms  forward ms  backward ms  optimizer ms  steps  syncs/step
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.session_read import fmt_count

__all__ = ["render_ranks_text", "render_ranks_markdown"]

_COLUMNS = ("rank", "step ms", "detailed ms", "busy ms", "data ms", "forward ms", "backward ms",
            "optimizer ms", "steps", "syncs/step")  # fmt: skip
#: the footnote: which steps each column is from (the detailed ones are slower: the hooks)
_FOOTNOTE = ("step ms: median of all steps; detailed ms, busy and the phases: medians of the "
             "detailed steps (slower: the profiler's hooks); busy = detailed - backward (DDP "
             "ranks wait for each other inside backward)")


_COMM_COLUMNS = ("comm ms", "comm %", "exposed ms", "waits ms")


def _fmt(value: Any) -> str:
    return "-" if value is None else fmt_count(value)


def _columns(result: Mapping[str, Any]) -> list[str]:
    return list(_COLUMNS) + (list(_COMM_COLUMNS) if result.get("communication") else [])


def _comm_cells(row: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    comm = result.get("communication")
    if not comm:
        return []
    mine = next((r for r in comm["ranks"] if r["rank"] == row["rank"]), {})
    return [_fmt(mine.get("comm_ms_per_step")), _fmt(mine.get("share_pct")),
            _fmt(mine.get("exposed_ms_per_step")), _fmt(mine.get("wait_ms_per_step"))]  # fmt: skip


def _cells(row: Mapping[str, Any], straggler: Any) -> list[str]:
    phases = row["phases"]
    mark = " *" if row["rank"] == straggler else ""
    return [
        f"{row['rank']}{mark}",
        fmt_count(row['step_ms']),
        _fmt(row.get('busy_of_step_ms')),
        fmt_count(row['busy_ms']),
        fmt_count(phases['data']),
        fmt_count(phases['forward']),
        fmt_count(phases['backward']),
        fmt_count(phases['optimizer']),
        str(row["steps"]),
        f"{fmt_count(row['syncs_per_step'])}",
    ]


def render_ranks_text(result: Mapping[str, Any]) -> str:
    """Aligned columns, one row per rank (``*`` marks the straggler), then the verdict.

    Example:
        >>> from torchdoctor.analyze.ranks import compare_ranks
        >>> session = lambda rank, step: {"environment": {"rank": rank, "world_size": 2},
        ...     "steps": [{}], "step_ms": {"median": step}, "phases": {"data": {"median": step - 10}}}
        >>> result = compare_ranks([session(0, 10.0), session(1, 20.0)])
        >>> render_ranks_text(result).splitlines()[-1].startswith("rank 1 is the straggler")
        True
    """
    columns = _columns(result)
    rows = [columns] + [_cells(r, result.get("straggler")) + _comm_cells(r, result)
                        for r in result["ranks"]]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))).rstrip() for row in rows]  # fmt: skip
    lines.append(_FOOTNOTE)
    if result.get("communication"):
        lines.append("comm = time in collectives per step (overlaps counted once); exposed = "
                     "not overlapped with compute; waits = arriving before the last rank")  # fmt: skip
    lines.append(result["verdict"])
    lines.extend(result.get("notes") or ())
    for advice in result.get("advice") or ():
        lines.append(f"advice (ranks {advice['ranks']}): {advice['title']}: {advice['fix']}")
    return "\n".join(lines) + "\n"


def render_ranks_markdown(result: Mapping[str, Any]) -> str:
    """The same as a Markdown table.

    Example:
        >>> from torchdoctor.analyze.ranks import compare_ranks
        >>> session = lambda rank, step: {"environment": {"rank": rank, "world_size": 2},
        ...     "steps": [{}], "step_ms": {"median": step}, "phases": {"data": {"median": step - 10}}}
        >>> result = compare_ranks([session(0, 10.0), session(1, 20.0)])
        >>> render_ranks_markdown(result).splitlines()[0]
        '# torchdoctor: ranks of a distributed run'
    """
    columns = _columns(result)
    lines = ["# torchdoctor: ranks of a distributed run", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]  # fmt: skip
    for row in result["ranks"]:
        cells = _cells(row, result.get("straggler")) + _comm_cells(row, result)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"{_FOOTNOTE}.", "",
              f"**{result['verdict']}**", ""]  # fmt: skip
    lines += [f"- {note}" for note in result.get("notes") or ()]
    for advice in result.get("advice") or ():
        lines += ["", f"### Advice (ranks {advice['ranks']}): {advice['title']}", "",
                  *[f"- {item}" for item in advice.get("evidence") or ()], "",
                  f"Fix: {advice['fix']}"]  # fmt: skip
    comm = result.get("communication")
    if comm and comm.get("sites"):
        lines += ["", "## Collectives (the rank that spends most in each)", "",
                  "| collective | ms per step | calls per step | bytes per call | phase | "
                  "median arrival skew ms |", "|---|---|---|---|---|---|"]  # fmt: skip
        for site in comm["sites"]:
            lines.append(f"| {site['label']} | {_fmt(site['ms_per_step'])} | "
                         f"{_fmt(site.get('calls_per_step'))} | {_fmt(site.get('bytes_per_call'))}"
                         f" | {site.get('phase')} | {_fmt(site.get('median_skew_ms'))} |")  # fmt: skip
    return "\n".join(lines) + "\n"

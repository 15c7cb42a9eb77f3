"""Text table of a distributed run's ranks (the result of ``analyze.ranks.compare_ranks``).

Example:
    >>> result = {"ranks": [{"rank": 0, "step_ms": 20.0, "busy_ms": 6.0, "steps": 5,
    ...     "syncs_per_step": 0.0, "phases": {"data": 1.0, "forward": 5.0, "backward": 14.0,
    ...     "optimizer": 0.0, "other": 0.0}}], "verdict": "one rank only: nothing to compare",
    ...     "straggler": None}
    >>> print(render_ranks_text(result).splitlines()[0])
    rank  step ms  busy ms  data ms  forward ms  backward ms  optimizer ms  steps  syncs/step
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["render_ranks_text", "render_ranks_markdown"]

_COLUMNS = ("rank", "step ms", "busy ms", "data ms", "forward ms", "backward ms", "optimizer ms",
            "steps", "syncs/step")  # fmt: skip


def _cells(row: Mapping[str, Any], straggler: Any) -> list[str]:
    phases = row["phases"]
    mark = " *" if row["rank"] == straggler else ""
    return [
        f"{row['rank']}{mark}",
        f"{row['step_ms']:.3g}",
        f"{row['busy_ms']:.3g}",
        f"{phases['data']:.3g}",
        f"{phases['forward']:.3g}",
        f"{phases['backward']:.3g}",
        f"{phases['optimizer']:.3g}",
        str(row["steps"]),
        f"{row['syncs_per_step']:.3g}",
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
    rows = [list(_COLUMNS)] + [_cells(r, result.get("straggler")) for r in result["ranks"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))).rstrip() for row in rows]  # fmt: skip
    lines.append("busy = step - backward (DDP ranks wait for each other inside backward)")
    lines.append(result["verdict"])
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
    lines = ["# torchdoctor: ranks of a distributed run", "",
             "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]  # fmt: skip
    for row in result["ranks"]:
        lines.append("| " + " | ".join(_cells(row, result.get("straggler"))) + " |")
    lines += ["", "busy = step - backward (DDP ranks wait for each other inside backward).", "",
              f"**{result['verdict']}**", ""]  # fmt: skip
    return "\n".join(lines)

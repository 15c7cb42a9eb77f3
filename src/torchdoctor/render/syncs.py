"""The host-sync table: ``session["syncs"]`` records grouped by source line, as text or rich.

One row per source line (kinds on the same line are joined: ``cpu+numpy``), most frequent
first. On a CPU run each row says ``(would sync on CUDA)``; on CUDA it shows the measured stall
per step. Renders data only: never measures.

Example:
    >>> records = [{"kind": "item", "op": "loss.item()", "file": "train.py", "line": 88,
    ...             "function": "train", "count": 4, "per_step": 1.0, "phase": "forward",
    ...             "stall_ms": None, "would_sync_on_cuda": True}]
    >>> print(format_sync_table(records).splitlines()[1])
      train.py:88  loss.item()  item  1 per step  forward  (would sync on CUDA)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.session_read import fmt_ms

MAX_LINES = 20


def _location(file: str, line: Any) -> str:
    """``file:line`` short enough for a table: relative to the working directory when the
    file is under it, else its last two path components (``workloads/losses.py:12``)."""
    try:
        relative = os.path.relpath(file)
        if not relative.startswith(".."):
            return f"{relative}:{line}"
    except ValueError:  # another drive on Windows
        pass
    parts = os.path.normpath(file).split(os.sep)
    short = os.path.join(*parts[-2:]) if len(parts) > 2 else file
    return f"{short}:{line}"


def _via(record: Mapping[str, Any]) -> str | None:
    """``train.py:24`` for a sync inside an installed package: the user's line that led there."""
    if not record.get("user_file"):
        return None
    return f"{os.path.basename(str(record['user_file']))}:{record.get('user_line', '?')}"


def _number(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def group_by_line(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (file, line): kinds joined, per-step counts and stalls summed.

    Example:
        >>> rows = group_by_line([
        ...     {"kind": "cpu", "file": "a.py", "line": 3, "per_step": 1.0, "count": 2},
        ...     {"kind": "numpy", "file": "a.py", "line": 3, "per_step": 1.0, "count": 2}])
        >>> rows[0]["kinds"], rows[0]["per_step"]
        ('cpu+numpy', 2.0)
    """
    rows: dict[tuple[str, Any], dict[str, Any]] = {}
    for record in records:
        key = (str(record.get("file") or "?"), record.get("line", "?"))
        row = rows.get(key)
        stall = record.get("stall_ms")
        if row is None:
            row = rows[key] = {
                "location": _location(*key),
                "file": key[0],
                "line": key[1],
                "op": str(record.get("op") or f"<{record.get('kind')}>"),
                "function": record.get("function"),
                "kinds": [],
                "per_step": 0.0,
                "count": 0,
                "phase": record.get("phase") or "-",
                "stall_ms": None,
                "via": _via(record),
            }
        row["kinds"].append(str(record.get("kind")))
        row["per_step"] += float(record.get("per_step") or 0.0)
        row["count"] += int(record.get("count") or 0)
        if isinstance(stall, int | float):
            row["stall_ms"] = (row["stall_ms"] or 0.0) + float(stall)
    out = list(rows.values())
    for row in out:
        row["kinds"] = "+".join(dict.fromkeys(row["kinds"]))
    out.sort(key=lambda r: (-r["per_step"], -r["count"], r["location"]))
    return out


def _status(row: Mapping[str, Any]) -> str:
    stall = row.get("stall_ms")
    if isinstance(stall, float):
        return f"stall {fmt_ms(stall)}/step"
    return "(would sync on CUDA)"


def _footer(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None) -> list[str]:
    lines = []
    if summary:
        mode = summary.get("mode", "fast")
        pct = summary.get("overhead_pct")
        overhead = (
            f", audit overhead ~{pct:.1f}% (estimated)" if isinstance(pct, int | float) else ""
        )
        lines.append(f"sync audit: {mode} mode on {summary.get('device', '?')}{overhead}")
        if mode == "fast":
            lines.append(
                "fast mode sees Python-level calls; --thorough (sync_audit(thorough=True)) also "
                "looks inside torch's own code, at a higher cost"
            )
    rough = _rough_rate(records)
    if rough:
        lines.append(rough)
    return lines


def _rough_rate(records: Sequence[Mapping[str, Any]]) -> str | None:
    """A note when a rate under one per step comes from one or two sightings in the audited
    steps (a `.item()` logged every 10 steps, seen once in 5 detailed steps, read 0.2).

    Example:
        >>> _rough_rate([{"per_step": 0.2, "count": 1}])
        'per step: counted in the audited (detailed) steps; a line seen there once or twice has a rough rate'
        >>> _rough_rate([{"per_step": 1.0, "count": 5}]) is None
        True
    """
    seen = [r for r in records if isinstance(r.get("per_step"), (int, float))
            and 0 < float(r["per_step"]) < 1 and 0 < int(r.get("count") or 0) <= 2]  # fmt: skip
    if not seen:
        return None
    return ("per step: counted in the audited (detailed) steps; a line seen there once or "
            "twice has a rough rate")


def format_sync_table(
    records: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any] | None = None,
    *,
    max_lines: int = MAX_LINES,
) -> str:
    """Plain-text table, one line per source line: ``file:line  code  kind  N per step ...``.

    Example:
        >>> record = {"file": "train.py", "line": 7, "kind": "item", "op": "loss.item()",
        ...           "per_step": 1.0, "count": 3, "phase": "forward"}
        >>> "loss.item()" in format_sync_table([record])
        True
    """
    rows = group_by_line(records)
    if not rows:
        head = "No host-device syncs found."
        return "\n".join([head, *_footer(records, summary)]) + "\n"
    total = sum(r["per_step"] for r in rows)
    predicted = all(not isinstance(r["stall_ms"], float) for r in rows)
    where = " (CPU run: predicted, these would sync on CUDA)" if predicted else ""
    head = f"Host-device syncs: {len(rows)} source line(s), {_number(total)} per step{where}"
    shown = rows[:max_lines]
    cells = [
        [
            r["location"],
            r["op"],
            r["kinds"],
            f"{_number(r['per_step'])} per step",
            str(r["phase"]),
            _status(r),
        ]
        for r in shown
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [head]
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1])]
        lines.append("  " + "  ".join([*padded, row[-1]]).rstrip())
    if len(rows) > max_lines:
        lines.append(f"  ... {len(rows) - max_lines} more line(s) in the session JSON")
    lines += _footer(records, summary)
    return "\n".join(lines) + "\n"


#: the console table's columns, and those dropped first when it is wider than the console
SYNC_COLUMNS = ("where", "source", "kind", "per step", "phase", "cost")
SYNC_DROP_ORDER = ("phase", "kind")
_SOURCE_MIN = 16  # the source column shrinks (ellipsis) down to this before columns go


def _sync_cells(row: Mapping[str, Any]) -> dict[str, str]:
    where = row["location"]
    if row.get("via"):
        where += f"\nfrom {row['via']}"
    return {
        "where": where,
        "source": row["op"],
        "kind": row["kinds"],
        "per step": _number(row["per_step"]),
        "phase": str(row["phase"]),
        "cost": _status(row).strip("()"),
    }


def _fitting(cells: list[dict[str, str]], width: int | None) -> list[str]:
    kept = list(SYNC_COLUMNS)

    def needed() -> int:  # heavy-head box: a rule and one pad each side per column
        total = 1
        for column in kept:
            longest = _longest(cells, column)
            total += 3 + (min(longest, _SOURCE_MIN) if column == "source" else longest)
        return total

    for column in SYNC_DROP_ORDER:
        if width is None or needed() <= width:
            break
        kept.remove(column)
    return kept


def _longest(cells: list[dict[str, str]], column: str) -> int:
    return max([len(column), *(len(line) for c in cells for line in c[column].splitlines())])


def _source_width(cells: list[dict[str, str]], columns: list[str], width: int | None) -> int | None:
    """What is left for the source column once the others have their natural width."""
    if width is None:
        return None
    others = sum(_longest(cells, c) for c in columns if c != "source")
    left = width - others - (3 * len(columns) + 1)
    return max(8, min(left, _longest(cells, "source")))


def render_sync_table(
    session: Mapping[str, Any], max_lines: int = MAX_LINES, width: int | None = None
) -> Any:
    """A rich Table of ``session["syncs"]`` (for the console report).

    With ``width`` the table fits it: the source column is shortened (ellipsis), then the
    phase and kind columns are dropped; headers are never cut.

    Example:
        >>> render_sync_table({"syncs": []}).row_count
        0
    """
    from rich.table import Table
    from rich.text import Text

    rows = group_by_line(session.get("syncs") or [])
    cells = [_sync_cells(row) for row in rows[:max_lines]]
    columns = _fitting(cells, width)
    table = Table(title="Host syncs (by source line)", title_justify="left", width=None)
    for column in columns:
        table.add_column(  # only the source column gives way (ellipsis) to fit ``width``
            column,
            justify="right" if column == "per step" else "left",
            overflow="ellipsis",
            no_wrap=True,
            width=_source_width(cells, columns, width) if column == "source" else None,
            min_width=24 if column == "source" and width is None else None,
        )
    for cell in cells:
        table.add_row(*(Text(cell[c]) for c in columns))  # Text: session strings are not markup
    notes = _footer(session.get("syncs") or [], session.get("sync_audit"))
    if len(rows) > max_lines:
        notes.insert(0, f"... {len(rows) - max_lines} more line(s) in the session JSON")
    table.caption = "\n".join(notes) or None
    return table


def render_syncs_text(session: Mapping[str, Any]) -> str:
    """The plain-text sync table of a whole session (``torchdoctor syncs`` prints this).

    Example:
        >>> render_syncs_text({"syncs": [], "sync_audit": None})
        'No host-device syncs found.\\n'
    """
    return format_sync_table(session.get("syncs") or [], session.get("sync_audit"))

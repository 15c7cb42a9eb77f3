"""The "Hot lines" section: time per user source line, grouped by enclosing function.

Columns: where (``file.py:LINE``), source text, forward and backward ms per step (means), % of
the step, executions per step, heaviest torch ops. Groups (one per enclosing function) are
ordered by their heaviest line. Renders ``session["hot_lines"]`` as rich (console), Markdown
or HTML; the JSON report is the session itself. Never measures.

Example:
    >>> line = {"file": "/a/t.py", "line": 3, "location": "t.py:3", "function": "loss",
    ...         "function_line": 1, "code": "d = a @ b", "owner": "",
    ...         "forward_ms": {"mean": 2.0}, "backward_ms": {"mean": 1.0},
    ...         "total_ms": {"mean": 3.0}, "pct_of_step": 30.0, "calls_per_step": 4.0,
    ...         "top_ops": [{"op": "Tensor.__matmul__", "forward_ms": 2.0, "backward_ms": 1.0,
    ...                      "calls_per_step": 4.0}]}
    >>> print(markdown_hot_lines({"hot_lines": {"lines": [line]}})[4])
    | **loss() (t.py:1)** | | | | | | |
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape as html_escape
from typing import Any

from torchdoctor.render.markdown_text import escape, table_code
from torchdoctor.source_names import short_file

MAX_ROWS = 15
MIN_PCT = 0.1  # lines under this % of the step are left out of the reports (kept in JSON)
MAX_CODE = 60
#: "run ms": the line's own calls and Python, in whatever phase it runs (a model call's forward,
#: clip_grad_norm_ between backward and the update); "bwd ms": the backward of what it computed
HEADER = ("where", "source", "run ms", "bwd ms", "% step", "calls/step", "top ops")


def _mean(stat: Any) -> float:
    if isinstance(stat, Mapping):
        value = stat.get("mean", stat.get("median"))
        return float(value) if isinstance(value, (int, float)) else 0.0
    return float(stat) if isinstance(stat, (int, float)) else 0.0


def _num(value: float) -> str:
    if abs(value) < 5e-4:  # float residue of subtractions: no exponent in a report
        return "0"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def _ops(line: Mapping[str, Any], limit: int = 2) -> str:
    parts = []
    for op in (line.get("top_ops") or ())[:limit]:
        ms = float(op.get("forward_ms") or 0.0) + float(op.get("backward_ms") or 0.0)
        parts.append(
            f"{op.get('op')} x{_num(float(op.get('calls_per_step') or 0.0))} {_num(ms)} ms"
        )
    return ", ".join(parts)


def _code(line: Mapping[str, Any]) -> str:
    """The source text (shortened), and the library frame it went through, if any."""
    code = str(line.get("code") or "")
    code = code if len(code) <= MAX_CODE else code[: MAX_CODE - 1] + "…"
    via = (line.get("via") or [None])[0]
    if isinstance(via, Mapping) and via.get("file"):
        code += f"  (via {short_file(via['file'])}:{via.get('line')})"
    return code


def grouped_lines(
    session: Mapping[str, Any], limit: int = MAX_ROWS, min_pct: float = MIN_PCT
) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """``(function label, lines)`` for the heaviest ``limit`` lines taking at least ``min_pct``
    % of the step, grouped by enclosing function (``loss() (t.py:1)``), groups in the order of
    their heaviest line.

    Example:
        >>> grouped_lines({"hot_lines": None})
        []
    """
    lines = [
        line
        for line in merged_by_line((session.get("hot_lines") or {}).get("lines") or ())[:limit]
        if float(line.get("pct_of_step") or 0.0) >= min_pct
    ]
    groups: dict[tuple[str, Any, Any], list[Mapping[str, Any]]] = {}
    for line in lines:
        key = (str(line.get("file")), line.get("function"), line.get("function_line"))
        groups.setdefault(key, []).append(line)
    out = []
    for (file, function, first), members in groups.items():
        name = "module level" if function == "<module>" else f"{function}()"
        out.append((f"{name} ({short_file(file)}:{first})", members))
    return out


def merged_by_line(lines: Any) -> list[Mapping[str, Any]]:
    """One row per source line: the session keeps a line once per module that ran it (the
    attention line of every block, to refine each block's (self) row); a report shows it once,
    its figures summed, heaviest first.

    Example:
        >>> row = {"file": "/m.py", "line": 64, "forward_ms": {"mean": 1.0},
        ...        "backward_ms": {"mean": 0.5}, "total_ms": {"mean": 1.5}, "pct_of_step": 3.0,
        ...        "calls_per_step": 1.0, "top_ops": [{"op": "F.sdpa", "forward_ms": 1.0,
        ...        "backward_ms": 0.5, "calls_per_step": 1.0}], "owner": "h.0.attn"}
        >>> (one,) = merged_by_line([row, {**row, "owner": "h.1.attn"}])
        >>> one["pct_of_step"], one["calls_per_step"], one["top_ops"][0]["calls_per_step"]
        (6.0, 2.0, 2.0)
    """
    merged: dict[tuple[str, Any], dict[str, Any]] = {}
    for line in lines:
        key = (str(line.get("file")), line.get("line"))
        row = merged.get(key)
        if row is None:
            merged[key] = dict(line)
            continue
        for field in ("forward_ms", "backward_ms", "total_ms"):
            row[field] = {"mean": _mean(row.get(field)) + _mean(line.get(field))}
        for field in ("pct_of_step", "calls_per_step", "torch_calls_per_step"):
            row[field] = float(row.get(field) or 0.0) + float(line.get(field) or 0.0)
        ops = {str(op.get("op")): dict(op) for op in row.get("top_ops") or ()}
        for op in line.get("top_ops") or ():
            mine = ops.setdefault(str(op.get("op")), {"op": op.get("op"), "forward_ms": 0.0,
                                  "backward_ms": 0.0, "calls_per_step": 0.0})  # fmt: skip
            if mine is not op:
                for field in ("forward_ms", "backward_ms", "calls_per_step"):
                    mine[field] = float(mine.get(field) or 0.0) + float(op.get(field) or 0.0)
        row["top_ops"] = sorted(
            ops.values(), key=lambda op: -(float(op.get("forward_ms") or 0.0)
                                           + float(op.get("backward_ms") or 0.0)),
        )  # fmt: skip
    return sorted(merged.values(), key=lambda row: -_mean(row.get("total_ms")))


def row_cells(line: Mapping[str, Any]) -> list[str]:
    """The table cells of one line (plain text), in :data:`HEADER` order.

    Example:
        >>> row_cells({"location": "t.py:3", "forward_ms": {"mean": 1.0}})[:3]
        ['t.py:3', '', '1']
    """
    return [
        str(line.get("location") or f"{line.get('file')}:{line.get('line')}"),
        _code(line),
        _num(_mean(line.get("forward_ms"))),
        _num(_mean(line.get("backward_ms"))),
        f"{float(line.get('pct_of_step') or 0.0):.1f}%",
        _num(float(line.get("calls_per_step") or 0.0)),
        _ops(line),
    ]


def _notes(session: Mapping[str, Any]) -> list[str]:
    section = session.get("hot_lines") or {}
    notes = [
        "time per user source line: run ms, the torch calls made from the line and the Python "
        "time between them, in whatever phase it runs (the forward, or between backward and the "
        "update: clip_grad_norm_); bwd ms, their backward; lines inside library modules count in those modules; "
        f"lines under {MIN_PCT:g}% of the step are in the JSON only"
    ]
    return notes + [str(n) for n in section.get("notes") or ()]


def rich_hot_lines(session: Mapping[str, Any]) -> list[Any]:
    """Rich renderables: a title and a table (nothing when no line was measured).

    Example:
        >>> rich_hot_lines({"hot_lines": None})
        []
    """
    from rich.table import Table
    from rich.text import Text

    groups = grouped_lines(session)
    if not groups:
        return []
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    order = (0, 2, 3, 4, 5, 6, 1)  # numbers first: the source text and ops give way
    for index in order:
        column = HEADER[index]
        if index in (2, 3, 4, 5):
            table.add_column(
                column.replace("/step", ""), justify="right", no_wrap=True, min_width=7
            )  # "0.00918": 3 significant digits are never cut
        else:
            width = {0: None, 6: 24}.get(index, 30)
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=width)
    for label, members in groups:
        function, _, where = label.rpartition(" (")
        table.add_row(
            Text(function, style="bold"), "", "", "", "", "", Text("(" + where, style="dim")
        )
        for line in members:
            cells = row_cells(line)
            table.add_row(*(Text("  " + cells[0] if i == 0 else cells[i]) for i in order))
    title = Text("Hot lines", style="bold")
    return [title, table, Text("; ".join(_notes(session)), style="dim")]


def markdown_hot_lines(session: Mapping[str, Any]) -> list[str]:
    """The section as Markdown lines (empty when no line was measured).

    Example:
        >>> line = {"file": "/a/t.py", "line": 3, "location": "t.py:3", "function": "loss",
        ...         "function_line": 1, "code": "d = a @ b", "owner": "", "top_ops": [],
        ...         "forward_ms": {"mean": 2.0}, "backward_ms": {"mean": 1.0},
        ...         "total_ms": {"mean": 3.0}, "pct_of_step": 30.0, "calls_per_step": 4.0}
        >>> print(*markdown_hot_lines({"hot_lines": {"lines": [line]}})[:6], sep="\\n")
        ### Hot lines
        <BLANKLINE>
        | where | source | run ms | bwd ms | % step | calls/step | top ops |
        |---|---|---:|---:|---:|---:|---|
        | **loss() (t.py:1)** | | | | | | |
        | t.py:3 | `d = a @ b` | 2 | 1 | 30.0% | 4 |  |
        >>> markdown_hot_lines({"hot_lines": None})
        []
    """
    groups = grouped_lines(session)
    if not groups:
        return []
    out = [
        "### Hot lines",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for label, members in groups:
        out.append(f"| **{escape(label)}** | | | | | | |")
        for line in members:
            cells = [escape(c) for c in row_cells(line)]
            cells[1] = table_code(row_cells(line)[1])  # (source verbatim: `a < b`, not &lt;)
            out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out += [f"- {escape(note)}" for note in _notes(session)]
    return out + [""]


def html_hot_lines(session: Mapping[str, Any]) -> str:
    """The section as an HTML table ('' when no line was measured).

    Example:
        >>> html_hot_lines({"hot_lines": None})
        ''
    """
    groups = grouped_lines(session)
    if not groups:
        return ""
    rows = []
    numeric = {2, 3, 4, 5}
    for label, members in groups:
        rows.append(
            f'<tr class="group"><td colspan="{len(HEADER)}"><strong>'
            f"{html_escape(label)}</strong></td></tr>"
        )
        for line in members:
            cells = row_cells(line)
            tds = []
            for i, cell in enumerate(cells):
                klass = ' class="num"' if i in numeric else (' class="mono"' if i < 2 else "")
                title = f' title="{html_escape(str(line.get("file") or ""))}"' if i == 0 else ""
                tds.append(f"<td{klass}{title}>{html_escape(cell)}</td>")
            rows.append("<tr>" + "".join(tds) + "</tr>")
    head = "".join(
        f"<th{' class=num' if i in numeric else ''}>{html_escape(h)}</th>"
        for i, h in enumerate(HEADER)
    )
    notes = "".join(f'<p class="meta">{html_escape(n)}</p>' for n in _notes(session))
    return (
        f'<table id="hot-lines-table"><thead><tr>{head}</tr></thead><tbody>'
        + "\n".join(rows)
        + f"</tbody></table>{notes}"
    )


def self_row_pointer(node: Mapping[str, Any]) -> str:
    """The ``(self)`` row's pointer to its heaviest hot line: ``→ t.py:3 +1`` (or '').

    Example:
        >>> self_row_pointer({"hot_lines": [{"location": "t.py:3"}, {"location": "t.py:9"}]})
        '→ t.py:3 +1'
    """
    pointers = node.get("hot_lines") or ()
    if not pointers:
        return ""
    more = f" +{len(pointers) - 1}" if len(pointers) > 1 else ""
    return f"→ {pointers[0].get('location')}{more}"

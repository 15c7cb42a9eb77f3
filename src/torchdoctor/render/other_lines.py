"""The sampled line sections, as rich, Markdown or HTML: "Between steps", the user lines sampled
in the ``other`` phase (checkpoints, ``gc.collect()``, logging; ``session["other_lines"]``), and
"Python outside torch", those of the forward phase's Python outside torch calls and modules (an
RL environment's step, tokenizing in the loop; ``session["python_lines"]``). Never measures.

Example:
    >>> session = {"step_ms": {"mean": 10.0}, "tree": {"total_ms": {"mean": 10.0}},
    ...            "other_lines": [{"location": "t.py:9", "code": "gc.collect()",
    ...                             "ms_per_step": 4.0, "via": []}]}
    >>> other_rows(session)
    [['t.py:9', '4', '40.0%', 'gc.collect()']]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from html import escape as html_escape
from typing import Any

from torchdoctor.render.markdown_text import escape, table_code
from torchdoctor.session_read import center, fmt_ms

#: lines under this share of the step are left out of the reports (kept in the JSON)
MIN_PCT = 0.5
MAX_ROWS = 8
HEADER = ("where", "ms/step", "% step", "source")
NOTE = (
    "user lines of the work between one step's end (optimizer.step(), or the step's last "
    "call) and the next forward that makes no torch call (sampled on CPU time in the detailed "
    "steps that time hot lines; waits are charged to no line); indented: the lines of a library's loop the user "
    "line runs (trainer.train())"
)
PYTHON_NOTE = (
    "user lines running Python outside any torch call and any module in the forward phase "
    "(sampled on CPU time in the detailed steps that time hot lines; an accelerator idles while "
    "they run unless "
    "work was queued before them)"
)
#: (session field, title, HTML id, note) of each section, in report order
SECTIONS = (
    ("other_lines", "Between steps", "between-steps", NOTE),
    ("python_lines", "Python outside torch", "python-outside-torch", PYTHON_NOTE),
)
#: the same fields when no step boundary was seen and the whole run is one step (a one-shot
#: inference script: imports and loading before the model's call, saving the output after)
WHOLE_RUN_SECTIONS = (
    ("other_lines", "Outside the model", "between-steps",
     "user lines of the run that make no torch call, outside the model's forward phase "
     "(imports, loading, saving the output; sampled on CPU time); the whole run is one step: "
     "no step boundary was seen"),
    ("python_lines", "Python outside torch, in the forward phase", "python-outside-torch",
     "user lines running Python outside any torch call and any module from the model's first "
     "call to the end of its forward phase (a no_grad block's end, else the run's; sampled on "
     "CPU time)"),
)  # fmt: skip


def sections(session: Mapping[str, Any]) -> tuple[tuple[str, str, str, str], ...]:
    """The sections to render: titled by what the phases mean in this session.

    Example:
        >>> sections({"config": {"step_boundary": "whole_run"}})[0][1]
        'Outside the model'
        >>> sections({})[0][1]
        'Between steps'
    """
    whole = (session.get("config") or {}).get("step_boundary") == "whole_run"
    return WHOLE_RUN_SECTIONS if whole else SECTIONS


def _step(session: Mapping[str, Any]) -> float:
    tree = session.get("tree") or {}
    return center(tree.get("total_ms")) or center(session.get("step_ms"))


def other_rows(session: Mapping[str, Any], field: str = "other_lines") -> list[list[str]]:
    """The rows (plain text) of the section of ``field``, heaviest first."""
    step = _step(session)
    rows = []
    for row in (session.get(field) or ())[:MAX_ROWS]:
        ms = float(row.get("ms_per_step") or 0.0)
        share = 100.0 * ms / step if step > 0 else 0.0
        if share < MIN_PCT:
            continue
        code = str(row.get("code") or "")
        via = (row.get("via") or [None])[0]
        if isinstance(via, Mapping) and via.get("file"):
            code += f"  (via {os.path.basename(str(via['file']))}:{via.get('line')})"
        rows.append([str(row.get("location") or "?"), fmt_ms(ms).removesuffix(" ms"),
                     f"{share:.1f}%", code])  # fmt: skip
        for line in row.get("inside") or ():  # a library's loop below the line: its own lines
            ms = float(line.get("ms_per_step") or 0.0)
            share = 100.0 * ms / step if step > 0 else 0.0
            if share < MIN_PCT:
                continue
            code = str(line.get("code") or "")
            via = line.get("via")
            if isinstance(via, Mapping) and via.get("location"):
                code += f"  (via {via['location']})"
            rows.append([f"  {line.get('location')}", fmt_ms(ms).removesuffix(" ms"),
                         f"{share:.1f}%", code])  # fmt: skip
    return rows


def rich_other_lines(session: Mapping[str, Any]) -> list[Any]:
    """Rich renderables: per section with rows, a title, a table and its note."""
    from rich.table import Table
    from rich.text import Text

    items: list[Any] = []
    for field, title, _, note in sections(session):
        rows = other_rows(session, field)
        if not rows:
            continue
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for index, column in enumerate(HEADER):
            table.add_column(column, justify="right" if index in (1, 2) else "left",
                             no_wrap=index < 3)  # fmt: skip
        for cells in rows:  # Text: source lines are not markup (``[int(i)]`` stays)
            table.add_row(*(Text(cell) for cell in cells))
        items += [Text(title, style="bold"), table, Text(note, style="dim")]
    return items


def markdown_other_lines(session: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the sections with rows."""
    out: list[str] = []
    for field, title, _, note in sections(session):
        rows = other_rows(session, field)
        if not rows:
            continue
        out += [f"## {title}", "", "| " + " | ".join(HEADER) + " |", "|---|---:|---:|---|"]
        out += ["| " + " | ".join([*map(escape, cells[:-1]), table_code(cells[-1])]) + " |"
                for cells in rows]  # (the source verbatim, as code)
        out += ["", note, ""]
    return out


def html_other_lines(session: Mapping[str, Any]) -> str:
    """The sections with rows as HTML ('' without any)."""
    out = []
    head = "".join(f"<th>{html_escape(h)}</th>" for h in HEADER)
    for field, title, anchor, note in sections(session):
        rows = other_rows(session, field)
        if not rows:
            continue
        body = "".join(
            "<tr>" + "".join(f"<td>{html_escape(cell)}</td>" for cell in cells) + "</tr>"
            for cells in rows
        )
        out.append(
            f'<section id="{anchor}"><h2>{html_escape(title)}</h2><table><thead><tr>{head}</tr>'
            f'</thead><tbody>{body}</tbody></table><p class="meta">{html_escape(note)}</p>'
            "</section>"
        )
    return "".join(out)

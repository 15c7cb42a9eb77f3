"""Render the run history (rows of ``torchdoctor.history.list_runs``): text or HTML.

Text: one line per run, then the step time over the runs of each script as a sparkline.
HTML: the same table and an inline SVG chart per script (no scripts, no network).

Example:
    >>> rows = [{"id": 1, "created": "2026-01-01T00:00:00+00:00", "script": "/x/train.py",
    ...          "args": [], "git_commit": None, "device": "cpu", "steps": 5, "step_ms": 10.0,
    ...          "step_q1": 9.0, "step_q3": 11.0, "top_module": "encoder", "advice": 2,
    ...          "kind": "run", "label": "train.py"}]
    >>> print(render_history_text(rows).splitlines()[-1])
    train.py  10 ms  ▄  (1 run: 10 ms)
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.session_read import fmt_ms

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """One character per value, from ▁ (the smallest) to █ (the largest).

    Example:
        >>> sparkline([1.0, 2.0, 3.0, 8.0])
        '▁▂▃█'
    """
    if not values:
        return ""
    low, high = min(values), max(values)
    if high - low <= 1e-12:
        return BARS[3] * len(values)
    return "".join(BARS[round((v - low) / (high - low) * (len(BARS) - 1))] for v in values)


def _name(row: Mapping[str, Any]) -> str:
    script = row.get("script")
    return os.path.basename(script) if script else str(row.get("label") or row.get("kind"))


def _series(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    series: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("step_ms"):
            series.setdefault(_name(row), []).append(row)
    return series


def _columns(row: Mapping[str, Any]) -> list[str]:
    spread = f"{fmt_ms(row.get('step_q1'))} - {fmt_ms(row.get('step_q3'))}"
    args = " ".join(row.get("args") or ())
    return [
        str(row["id"]), str(row.get("created") or "")[:16].replace("T", " "),
        f"{_name(row)} {args}".strip(), row.get("kind") or "",
        (row.get("git_commit") or "-")[:8], str(row.get("device") or "-"),
        str(row.get("steps") or 0), fmt_ms(row.get("step_ms")), spread,
        str(row.get("top_module") or "-"),
        "-" if row.get("advice") is None else str(row["advice"]),
    ]  # fmt: skip


HEADER = ["id", "date (UTC)", "script", "kind", "commit", "device", "steps", "step",
          "q1 - q3", "top module", "advice"]  # fmt: skip


def render_history_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """A table of runs, then per script: last step time, sparkline, range over runs.

    Example:
        >>> render_history_text([])
        'no runs recorded yet: `torchdoctor run SCRIPT` records one\\n'
    """
    if not rows:
        return "no runs recorded yet: `torchdoctor run SCRIPT` records one\n"
    table = [HEADER] + [_columns(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
    lines += ["", "step time over runs (oldest to newest):"]
    for name, runs in _series(rows).items():
        values = [float(r["step_ms"]) for r in runs]
        count = f"{len(values)} run{'s' if len(values) != 1 else ''}"
        span = fmt_ms(values[0]) if len(set(values)) == 1 else (
            f"{fmt_ms(min(values))} - {fmt_ms(max(values))}")  # fmt: skip
        lines.append(f"{name}  {fmt_ms(values[-1])}  {sparkline(values)}  ({count}: {span})")
    return "\n".join(lines) + "\n"


def _chart(name: str, runs: Sequence[Mapping[str, Any]]) -> str:
    """An SVG line chart of the median step time (with the q1-q3 band) over runs."""
    width, height, pad = 560, 160, 36
    medians = [float(r["step_ms"]) for r in runs]
    lows = [float(r.get("step_q1") or m) for r, m in zip(runs, medians)]
    highs = [float(r.get("step_q3") or m) for r, m in zip(runs, medians)]
    top = max(highs) * 1.1 or 1.0
    step = (width - 2 * pad) / max(len(runs) - 1, 1)

    def xy(i: int, v: float) -> str:
        return f"{pad + i * step:.1f},{height - pad - v / top * (height - 2 * pad):.1f}"

    band = [xy(i, v) for i, v in enumerate(highs)] + [
        xy(i, v) for i, v in reversed(list(enumerate(lows)))
    ]
    dots = "".join(
        f'<circle cx="{xy(i, m).split(",")[0]}" cy="{xy(i, m).split(",")[1]}" r="3">'
        f"<title>run {r['id']}: {html.escape(fmt_ms(m))}</title></circle>"
        for i, (r, m) in enumerate(zip(runs, medians))
    )
    return (
        f'<h3>{html.escape(name)}</h3><svg class="chart" width="{width}" height="{height}" '
        f'role="img" aria-label="step time over runs of {html.escape(name)}">'
        f'<polygon points="{" ".join(band)}" fill="#cfe3f7"/>'
        f'<polyline points="{" ".join(xy(i, m) for i, m in enumerate(medians))}" fill="none" '
        f'stroke="#1f6feb" stroke-width="2"/>{dots}'
        f'<text x="4" y="{pad - 8}" font-size="11">{html.escape(fmt_ms(top))}</text>'
        f'<text x="4" y="{height - pad + 14}" font-size="11">0</text></svg>'
    )


def render_history_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """A standalone HTML page: a step-time chart per script (median, q1-q3 band) and the table.

    Example:
        >>> "<table>" in render_history_html([])
        True
    """
    charts = "".join(_chart(name, runs) for name, runs in _series(rows).items())
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _columns(r)) + "</tr>" for r in rows
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>torchdoctor history</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style></head><body>"
        f"<h1>torchdoctor run history</h1><h2>Step time over runs</h2>{charts or '<p>none</p>'}"
        f"<h2>Runs</h2><table><tr>{head}</tr>{body}</table></body></html>\n"
    )

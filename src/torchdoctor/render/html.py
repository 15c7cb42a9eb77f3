"""One self-contained HTML report: works offline, all CSS and JS inlined from ``render/assets``.

Sections: summary cards, phase bar, an interactive icicle chart of the module tree (forward,
backward, or both; click to zoom), the hot source lines, the host-sync table with source lines,
and the ranked advice. Every session string is escaped: static parts with ``html.escape``, the chart's data as
JSON with ``<``, ``>`` and ``&`` written as ``\\u`` escapes and drawn with ``textContent``. A
Content-Security-Policy forbids any network access.

Example:
    >>> from torchdoctor.session import Session
    >>> page = render_html(Session.new("demo", with_environment=False))
    >>> page.startswith("<!doctype html>") and "https://" not in page
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from html import escape
from importlib import resources
from typing import Any

from torchdoctor.render.hot_lines import html_hot_lines
from torchdoctor.render.markdown import gain_text, session_advice
from torchdoctor.render.other_lines import html_other_lines
from torchdoctor.render.tree import detailed_step_ms
from torchdoctor.seeds import seed_reference
from torchdoctor.session_read import (
    PHASES,
    center,
    fmt_count,
    fmt_ms,
    incomplete_text,
    no_advice_text,
    step_count,
    step_ms,
    tree_step_ms,
)

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)


def _asset(name: str) -> str:
    return resources.files("torchdoctor.render").joinpath("assets", name).read_text("utf-8")


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>``, ``&`` or line separators.

    Example:
        >>> script_json({"name": "</script><img src=x>"})
        '{"name": "\\\\u003c/script\\\\u003e\\\\u003cimg src=x\\\\u003e"}'
    """
    text = json.dumps(value, allow_nan=False, default=str)
    for raw, safe in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, safe)
    return text


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _count(value: Any) -> str:
    return fmt_count(value) if isinstance(value, int | float) else "-"


def _summary(session: Mapping[str, Any], advice: list[dict[str, Any]]) -> str:
    step = step_ms(session)
    env = session.get("environment") or {}
    syncs = session.get("syncs") or []
    per_step = sum(float(r.get("per_step") or 0) for r in syncs)
    cards = [
        ("step time", fmt_ms(step) if step > 0 else "-"),
        ("steps profiled", step_count(session)),
        ("host syncs / step", fmt_count(per_step)),
        ("device", env.get("device") or "?"),
        ("advice", len(advice)),
    ]
    parts = ['<div class="summary" id="summary-cards">']
    for label, value in cards:
        parts.append(
            f'<div class="card"><div class="value">{_e(value)}</div>'
            f'<div class="label">{_e(label)}</div></div>'
        )
    parts.append("</div>")
    if advice:
        top = advice[0]
        parts.append(
            f"<p>Top problem: <strong>{_e(top.get('title', ''))}</strong> "
            f'<span class="gain">{_e(gain_text(top))}</span></p>'
        )
    if incomplete_text(session):
        parts.append(f'<p class="warning">{_e(incomplete_text(session))}</p>')
    if session.get("interrupted"):
        parts.append(
            '<p class="warning">Collection was interrupted; numbers cover the steps seen.</p>'
        )
    if session.get("error"):
        parts.append(
            f'<p class="warning">The profiled code raised an error:</p>'
            f"<pre>{_e(session['error'])}</pre>"
        )
    return "\n".join(parts)


def _phases(session: Mapping[str, Any]) -> str:
    phases = session.get("phases") or {}
    step = tree_step_ms(session)  # (detail windows: the phases are the detailed steps')
    names = [p for p in PHASES if p in phases] + sorted(set(phases) - set(PHASES))
    if not names or step <= 0:
        return '<p class="meta">No phases recorded.</p>'
    bar = ['<div class="phase-bar" id="phase-bar">']
    rows = []
    for name in names:
        value = center(phases[name])
        share = 100.0 * value / step
        rows.append(
            f'<tr><td>{_e(name)}</td><td class="num">{_e(fmt_ms(value))}</td>'
            f'<td class="num">{share:.0f}%</td></tr>'
        )
        if share > 0:  # a phase that took no time gets no sliver in the bar
            klass = f"phase phase-{name}" if name in PHASES else "phase phase-other"
            bar.append(
                f'<div class="{_e(klass)}" style="width:{share:.2f}%" '
                f'title="{_e(name)}: {_e(fmt_ms(value))} ({share:.0f}%)">{_e(name)}</div>'
            )
    bar.append("</div>")
    of = "% of a detailed step" if detailed_step_ms(session) > 0 else "% of step"
    table = (
        '<table id="phase-table"><thead><tr><th>phase</th><th class="num">per step</th>'
        f'<th class="num">{of}</th></tr></thead><tbody>' + "\n".join(rows) + "</tbody></table>"
    )
    return "\n".join(bar) + "\n" + table


def _syncs(session: Mapping[str, Any]) -> str:
    records = sorted(session.get("syncs") or [], key=lambda r: -float(r.get("per_step") or 0))
    if not records:
        return '<p class="meta" id="sync-none">No host syncs recorded.</p>'
    rows = []
    for r in records:
        stall = r.get("stall_ms")
        stall_text = (
            fmt_ms(stall)
            if isinstance(stall, (int, float))
            else ("would sync on CUDA" if r.get("would_sync_on_cuda") else "-")
        )
        rows.append(
            "<tr>"
            f'<td class="mono" title="{_e(r.get("file") or "")}">'
            f"{_e(os.path.basename(str(r.get('file') or '?')))}:{_e(r.get('line', '?'))}</td>"
            f'<td class="mono">{_e(r.get("op") or "")}</td>'
            f"<td>{_e(r.get('kind'))}</td>"
            f"<td>{_e(r.get('function') or '')}</td>"
            f'<td class="num">{_e(_count(r.get("per_step")))}</td>'
            f"<td>{_e(r.get('phase') or '-')}</td>"
            f'<td class="num">{_e(stall_text)}</td>'
            "</tr>"
        )
    return (
        '<table id="sync-table"><thead><tr><th>where</th><th>source</th><th>kind</th>'
        '<th>function</th><th class="num">per step</th><th>phase</th>'
        '<th class="num">stall / step</th></tr></thead><tbody>'
        + "\n".join(rows)
        + "</tbody></table>"
    )


def _advice(advice: list[dict[str, Any]], empty: str = "") -> str:
    if not advice:
        text = escape(empty or "No rule found a problem worth fixing.")
        return f'<p class="meta" id="advice-none">{text}</p>'
    items = []
    for a in advice:
        evidence = "".join(f"<li>{_e(line)}</li>" for line in a.get("evidence") or ())
        code = f"<pre><code>{_e(a['code'])}</code></pre>" if a.get("code") else ""
        refs = ", ".join(_e(seed_reference(str(r))) for r in a.get("references") or ())
        items.append(
            f'<li data-rule="{_e(a.get("rule", ""))}">'
            f'<div class="title">{_e(a.get("title", ""))}'
            f'<span class="pill">{_e(a.get("confidence", ""))} confidence</span></div>'
            f'<div class="gain">Estimated gain: {_e(gain_text(a))}</div>'
            f"<ul>{evidence}</ul>"
            + (f"<div><strong>Fix:</strong> {_e(a['fix'])}</div>" if a.get("fix") else "")
            + code
            + (f'<div class="meta">References: {refs}</div>' if refs else "")
            + "</li>"
        )
    return '<ol class="advice" id="advice-list">' + "\n".join(items) + "</ol>"


def _hot_lines(session: Mapping[str, Any]) -> str:
    """The hot-lines section, absent when no source line was measured."""
    body = html_hot_lines(session)
    if not body:
        return ""
    return f'<section id="hot-lines">\n<h2>Hot lines</h2>\n{body}\n</section>\n'


def render_html(session: Mapping[str, Any]) -> str:
    """The complete, self-contained HTML report as a string.

    Example:
        >>> page = render_html({"label": "<b>x</b>", "tree": None, "advice": []})
        >>> "<b>x</b>" in page, "&lt;b&gt;x&lt;/b&gt;" in page
        (False, True)
    """
    advice = session_advice(session)
    label = str(session.get("label") or "session")
    env = session.get("environment") or {}
    config = session.get("config") or {}
    meta = " · ".join(
        str(v)
        for v in (
            session.get("tool"),
            session.get("created"),
            env.get("device"),
            f"torch {env.get('torch')}" if env.get("torch") else None,
            f"timing {config.get('timing')}" if config.get("timing") else None,
        )
        if v
    )
    payload = {"tree": session.get("tree"), "step_ms": step_ms(session), "label": label}
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>torchdoctor: {_e(label)}</title>
<style>
{_asset("report.css")}
</style>
</head>
<body>
<header>
<h1>torchdoctor report: {_e(label)}</h1>
<p class="meta">{_e(meta)}</p>
<div id="td-errors"></div>
</header>
<section id="summary">
<h2>Summary</h2>
{_summary(session, advice)}
</section>
<section id="phases">
<h2>Phases</h2>
{_phases(session)}
</section>
<section id="tree">
<h2>Module tree</h2>
<div class="controls" id="chart-controls">
<button type="button" data-mode="total" class="active">forward + backward</button>
<button type="button" data-mode="forward">forward</button>
<button type="button" data-mode="backward">backward</button>
<button type="button" id="chart-reset">Reset zoom</button>
<span class="meta" id="chart-crumbs"></span>
</div>
<div class="chart" id="chart" role="img" aria-label="icicle chart of the module tree"></div>
<div class="detail mono" id="chart-detail">Hover a box for details; click to zoom.</div>
</section>
{_hot_lines(session)}{html_other_lines(session)}<section id="syncs">
<h2>Host syncs</h2>
{_syncs(session)}
</section>
<section id="advice">
<h2>Advice</h2>
{_advice(advice, no_advice_text(session))}
</section>
<script type="application/json" id="td-data">{script_json(payload)}</script>
<script>
{_asset("report.js")}
</script>
</body>
</html>
"""

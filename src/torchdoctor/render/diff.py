"""Render a session diff (``torchdoctor.analyze.diff.diff_sessions``) as Markdown text.

The text reads well in a terminal and renders as tables on GitHub.

Example:
    >>> from torchdoctor.analyze.diff import diff_sessions
    >>> d = diff_sessions({"step_ms": {"median": 4.0}}, {"step_ms": {"median": 2.0}})
    >>> "2.00x faster" in render_diff(d)
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.render.markdown_text import escape
from torchdoctor.session_read import fmt_count, fmt_ms

MAX_MODULES = 25


def _delta(row: Mapping[str, Any]) -> str:
    delta = row.get("delta_ms") or 0.0
    text = f"{delta:+.3g} ms"
    if row.get("delta_pct") is not None:
        text += f" ({row['delta_pct']:+.0f}%)"
    return text


def _count(value: Any) -> str:
    return fmt_count(value) if isinstance(value, int | float) else "?"


def _sync_line(record: Mapping[str, Any]) -> str:
    where = f"{os.path.basename(str(record.get('file') or '?'))}:{record.get('line', '?')}"
    op = escape(str(record.get("op") or record.get("kind")))
    return f"- `{where}` {op} [{escape(str(record.get('kind')))}], {_count(record.get('per_step'))}/step"


def render_diff(diff: Mapping[str, Any], max_modules: int = MAX_MODULES) -> str:
    """Markdown: step change, phases table, biggest module changes, syncs removed/added.

    Example:
        >>> from torchdoctor.analyze.diff import diff_sessions
        >>> render_diff(diff_sessions({}, {})).splitlines()[0]
        '# torchdoctor diff: ? -> ?'
    """
    old, new = escape(str(diff.get("old_label") or "?")), escape(str(diff.get("new_label") or "?"))
    step = diff.get("step") or {}
    lines = [f"# torchdoctor diff: {old} -> {new}", ""]
    speedup = step.get("speedup")
    verdict = ""
    if speedup:
        verdict = f" ({speedup:.2f}x faster)" if speedup >= 1 else f" ({1 / speedup:.2f}x slower)"
    lines.append(
        f"**Step:** {fmt_ms(step.get('old_ms'))} -> {fmt_ms(step.get('new_ms'))}, "
        f"{_delta(step)}{verdict}"
    )
    per_step = diff.get("syncs_per_step") or {}
    lines.append(
        f"**Host syncs per step:** {fmt_count(per_step.get('old', 0))} -> {fmt_count(per_step.get('new', 0))} "
        f"({len(diff.get('syncs_removed') or [])} line(s) removed, "
        f"{len(diff.get('syncs_added') or [])} added, {diff.get('syncs_kept', 0)} kept)"
    )
    lines.append("")
    if diff.get("phases"):
        lines += ["## Phases", "", "| phase | old | new | change |", "|---|---:|---:|---:|"]
        for row in diff["phases"]:
            lines.append(
                f"| {escape(row['phase'])} | {fmt_ms(row['old_ms'])} | {fmt_ms(row['new_ms'])} "
                f"| {_delta(row)} |"
            )
        lines.append("")
    modules = [
        m
        for m in diff.get("modules") or ()
        if abs(m.get("delta_ms") or 0) > 0 or m.get("status") != "changed"
    ]
    if modules:
        lines += [
            "## Modules (largest change first)",
            "",
            "| module | old | new | change | forward | backward |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in modules[:max_modules]:
            status = "" if row["status"] == "changed" else f" ({row['status']})"
            lines.append(
                f"| {escape(row['path'])}{status} | {fmt_ms(row['old_ms'])} | "
                f"{fmt_ms(row['new_ms'])} | {_delta(row)} | {_delta(row['forward'])} | "
                f"{_delta(row['backward'])} |"
            )
        if len(modules) > max_modules:
            lines.append(f"\n... {len(modules) - max_modules} more module(s)")
        lines.append("")
    for key, title in (("syncs_removed", "Syncs removed"), ("syncs_added", "Syncs added")):
        records = diff.get(key) or []
        if records:
            lines += [f"## {title}", ""] + [_sync_line(r) for r in records] + [""]
    return "\n".join(lines).rstrip() + "\n"

"""Markdown report in the seeds' shape: summary, breakdown, core problems, prioritized advice
with estimated gains, code changes, next actions.

Advice comes from ``session["advice"]``: rendering never analyses, so callers compute it first
(:func:`torchdoctor.reports.with_advice`, as ``write_reports`` and ``render_report`` do). All
session strings outside code blocks are escaped, so a module named
``<img src=x onerror=alert(1)>`` stays text.

Example:
    >>> from torchdoctor.session import Session
    >>> render_markdown(Session.new("demo", with_environment=False)).splitlines()[0]
    '# torchdoctor report: demo'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.kernel_time import kernel_time_text
from torchdoctor.render.markdown_text import code_block, code_span, escape, inline
from torchdoctor.render.tree import (
    contention_text,
    detailed_step_ms,
    heavy_overhead_text,
    one_step_text,
    run_time_text,
)
from torchdoctor.seeds import seed_reference
from torchdoctor.session_read import (
    PHASES,
    center,
    error_text,
    fmt_count,
    fmt_ms,
    incomplete_text,
    no_advice_text,
    step_count,
    step_ms,
    tree_step_ms,
)

TOP_PROBLEMS = 3
MAX_SYNC_LINES = 15


def session_advice(session: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The session's advice dicts in priority order (none when it has not been advised).

    Example:
        >>> session_advice({"advice": [{"rule": "x", "priority": 1}]})[0]["rule"]
        'x'
    """
    return sorted(session.get("advice") or [], key=lambda a: a.get("priority") or 0)


def _tree_text(session: Mapping[str, Any]) -> str:
    """The module tree as text, from the profiler's tree renderer."""
    if not session.get("tree"):
        return "(no module tree recorded)"
    from torchdoctor.render.tree import render_tree_text

    return render_tree_text(session)


def gain_text(advice: Mapping[str, Any]) -> str:
    """'12.5 ms per step (6%), range 12.5-25 ms' or 'not measurable from this run'.

    Example:
        >>> gain_text({"estimated_saving_ms": 10.0, "estimated_saving_pct": 5.0})
        '10 ms per step (5% of the step)'
        >>> gain_text({"estimated_saving_ms": None, "saving_range_ms": [0.0, 4.0]})
        'not stated, up to 4 ms per step (measure it)'
        >>> gain_text({"estimated_saving_ms": 0.0, "saving_range_ms": [0.0, 2.4]})  # (a bound)
        'not stated, up to 2.4 ms per step (measure it)'
    """
    saving = advice.get("estimated_saving_ms")
    span = advice.get("saving_range_ms")
    if not saving and span and len(span) == 2 and span[1] > 0:  # (a bound, no estimate: an
        # estimate of 0 read '0 ms per step (0% of the step), range 0 ms to 2.4 ms')
        return f"not stated, up to {fmt_ms(span[1])} per step (measure it)"
    if saving is None:
        return "not measurable from this run"
    text = f"{fmt_ms(saving)} per step"
    if advice.get("estimated_saving_pct") is not None:
        text += f" ({advice['estimated_saving_pct']:.0f}% of the step)"
    if span and abs(span[1] - span[0]) > 1e-9:
        text += f", range {fmt_ms(span[0])} to {fmt_ms(span[1])}"
    return text


def _summary(session: Mapping[str, Any], advice: list[dict[str, Any]]) -> list[str]:
    env = session.get("environment") or {}
    config = session.get("config") or {}
    step = step_ms(session)
    stat = session.get("step_ms") or {}
    lines = ["## Summary", ""]
    incomplete = incomplete_text(session)
    if incomplete:  # a checkpoint (collect/checkpoint.py): say so before any number
        lines.append(f"- **Warning:** {escape(incomplete)}")
    steps = step_count(session)
    spread = ""
    if stat.get("q1") is not None and stat.get("q3") is not None and step > 0:
        spread = (
            f" (median {fmt_ms(stat.get('median'))}, middle half {fmt_ms(stat['q1'])} to "
            f"{fmt_ms(stat['q3'])})"
        )
    one = one_step_text(session) if steps == 1 else "its one step"  # (no boundary: no warm-up)
    lines.append(
        f"- **Step time:** {fmt_ms(step) if step > 0 else '-'} per step{spread}, "
        f"{steps} step(s) profiled after {config.get('warmup', '?')} warm-up"
        if one == "its one step" else f"- **Step time:** {fmt_ms(step)} in {one}"
    )
    phases = session.get("phases") or {}
    detailed = detailed_step_ms(session)  # (windows: the phases' shares are of that step)
    windowed = detailed > 0
    base = detailed if windowed else step
    parts = [
        f"{escape(p)} {fmt_ms(center(phases[p]))} ({100 * center(phases[p]) / base:.0f}%)"
        for p in PHASES
        if p in phases and base > 0
    ]
    if parts:
        lines.append("- **Phases:** " + ", ".join(parts) + (
            f" (of a detailed step, {fmt_ms(detailed)})" if windowed else ""))  # fmt: skip
    for caveat in (heavy_overhead_text(session), contention_text(session),
                   kernel_time_text(session)):  # (the process's kernel time: page faults)
        if caveat:
            lines.append(f"- **Caveat:** {escape(caveat)}")
    elsewhere = run_time_text(session)
    if elsewhere:  # (the steps a minority of the run: where the rest went)
        lines.append(f"- **Run:** {escape(elsewhere)}")
    lines.append(
        f"- **Where:** {escape(str(env.get('device') or '?'))}, torch "
        f"{escape(str(env.get('torch') or '?'))}, timing "
        f"{escape(str(config.get('timing') or '?'))}"
    )
    syncs = session.get("syncs") or []
    if syncs:
        per_step = sum(float(r.get("per_step") or 0) for r in syncs)
        lines.append(f"- **Host syncs:** {fmt_count(per_step)} per step from {len(syncs)} source line(s)")
    if advice:
        top = advice[0]
        lines.append(f"- **Top problem:** {inline(top.get('title', ''))}: {gain_text(top)}")
        lines.append(
            "- Savings are per remedy and do not add up: fixing one part changes the "
            "share of the others. Re-profile after each change."
        )
    if session.get("interrupted"):
        lines.append("- **Warning:** collection was interrupted; numbers cover the steps seen.")
    if session.get("error"):
        lines.append(f"- **Error in the profiled code:** {escape(error_text(session) or '')}")
    for note in config.get("notes") or ():
        lines.append(f"- Note: {escape(str(note))}")
    return lines + [""]


def _breakdown(session: Mapping[str, Any]) -> list[str]:
    lines = ["## Breakdown", "", code_block(_tree_text(session)), ""]
    phases = session.get("phases") or {}
    step = tree_step_ms(session)  # (detail windows: the phases are the detailed steps')
    if phases:
        of = "% of a detailed step" if detailed_step_ms(session) > 0 else "% of step"
        lines += [f"| phase | per step | {of} |", "|---|---:|---:|"]
        for phase in [p for p in PHASES if p in phases] + sorted(set(phases) - set(PHASES)):
            value = center(phases[phase])
            share = f"{100 * value / step:.0f}%" if step > 0 else "-"
            lines.append(f"| {escape(phase)} | {fmt_ms(value)} | {share} |")
        lines.append("")
    from torchdoctor.render.hot_lines import markdown_hot_lines
    from torchdoctor.render.other_lines import markdown_other_lines

    lines += markdown_hot_lines(session)
    lines += markdown_other_lines(session)
    syncs = sorted(session.get("syncs") or [], key=lambda r: -float(r.get("per_step") or 0))
    if syncs:
        lines += [
            "### Host syncs",
            "",
            "| where | op | kind | per step | phase | stall / step |",
            "|---|---|---|---:|---|---:|",
        ]
        for r in syncs[:MAX_SYNC_LINES]:
            where = f"{os.path.basename(str(r.get('file') or '?'))}:{r.get('line', '?')}"
            stall = r.get("stall_ms")
            stall_text = (
                fmt_ms(stall)
                if isinstance(stall, (int, float))
                else ("would sync on CUDA" if r.get("would_sync_on_cuda") else "-")
            )
            lines.append(
                f"| {escape(where)} | {escape(str(r.get('op') or ''))} | "
                f"{escape(str(r.get('kind')))} | {_per_step_text(r.get('per_step'))} | "
                f"{escape(str(r.get('phase') or '-'))} | {stall_text} |"
            )
        if len(syncs) > MAX_SYNC_LINES:
            lines.append(f"\n... {len(syncs) - MAX_SYNC_LINES} more line(s) in the JSON session")
        lines.append("")
    return lines


def _core_problems(advice: list[dict[str, Any]], empty: str = "") -> list[str]:
    lines = ["## Core problems", ""]
    if not advice:
        return lines + [empty or "No rule found a problem worth fixing in this run.", ""]
    for i, item in enumerate(advice[:TOP_PROBLEMS], start=1):
        evidence = item.get("evidence") or [""]
        lines.append(f"{i}. **{inline(item.get('title', ''))}**: {inline(evidence[0])}")
    return lines + [""]


def _advice_section(advice: list[dict[str, Any]]) -> list[str]:
    lines = ["## Prioritized advice", ""]
    if not advice:
        return lines + ["(none)", ""]
    for item in advice:
        lines.append(f"### Priority {item.get('priority', '?')}: {inline(item.get('title', ''))}")
        lines.append("")
        lines.append(
            f"**Estimated gain:** {gain_text(item)} · confidence "
            f"{escape(str(item.get('confidence')))} · rule `{item.get('rule')}`"
        )
        lines.append("")
        for line in item.get("evidence") or ():
            lines.append(f"- {inline(line)}")
        lines.append("")
        if item.get("fix"):
            lines += [f"**Fix:** {inline(item['fix'])}", ""]
        if item.get("references"):
            refs = ", ".join(inline(seed_reference(str(r))) for r in item["references"])
            lines += [f"**References:** {refs}", ""]
    return lines


def _code_changes(advice: list[dict[str, Any]]) -> list[str]:
    with_code = [a for a in advice if a.get("code")]
    lines = ["## Code changes", ""]
    if not with_code:
        return lines + ["(no code change suggested)", ""]
    for item in with_code:
        lines += [
            f"**Priority {item.get('priority', '?')}:** {inline(item.get('title', ''))}",
            "",
            code_block(item["code"], "python"),
            "",
        ]
    return lines


def _next_actions(session: Mapping[str, Any], advice: list[dict[str, Any]]) -> list[str]:
    lines = ["## Next actions", ""]
    for item in advice[:TOP_PROBLEMS]:
        lines.append(f"- [ ] Priority {item.get('priority', '?')}: {inline(item.get('title', ''))}")
    files = sorted({str(r.get("file")) for r in session.get("syncs") or () if r.get("file")})
    if files:
        shown = " ".join(files[:5])
        lines.append(
            "- [ ] Lint the files that sync for the static patterns behind them: "
            + code_span(f"torchdoctor lint {shown}")
            + "."
        )
    lines += [
        "- [ ] Check the outputs did not change (e.g. `torchdoctor.compare(old_fn, new_fn, x)`).",
        "- [ ] Re-profile and save the session, then compare: "
        "`torchdoctor diff before.json after.json`.",
        "",
    ]
    return lines


def render_markdown(session: Mapping[str, Any]) -> str:
    """The full Markdown report of a session.

    Example:
        >>> text = render_markdown({"label": "x", "tree": None, "advice": []})
        >>> "## Prioritized advice" in text
        True
    """
    advice = session_advice(session)
    label = escape(str(session.get("label") or "session"))
    header = [f"# torchdoctor report: {label}", ""]
    meta = [str(session.get(k)) for k in ("tool", "created") if session.get(k)]
    if meta:
        header += [escape(" · ".join(meta)), ""]
    lines = (
        header
        + _summary(session, advice)
        + _breakdown(session)
        + _core_problems(advice, no_advice_text(session))
        + _advice_section(advice)
        + _code_changes(advice)
        + _next_actions(session, advice)
    )
    return "\n".join(lines).rstrip() + "\n"


def _per_step_text(value: object) -> str:
    """Syncs per step for a table cell: 3 significant digits (``0.102``, ``38.3``, ``1``)."""
    return fmt_count(value) if isinstance(value, (int, float)) else "-"

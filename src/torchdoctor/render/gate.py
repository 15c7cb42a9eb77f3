"""Render the CI gate's verdict (``torchdoctor.analyze.gate.step_gate``) as Markdown.

The same text goes to the terminal and to ``$GITHUB_STEP_SUMMARY`` (GitHub renders it).

Example:
    >>> from torchdoctor.analyze.gate import step_gate
    >>> g = step_gate({"step_ms": {"median": 10.0}}, {"step_ms": {"median": 10.1}}, 5.0)
    >>> render_gate(g, "base.json", "new.json").splitlines()[0]
    '## torchdoctor step-time gate: PASS'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.render.markdown_text import escape
from torchdoctor.session_read import fmt_ms


def render_gate(gate: Mapping[str, Any], base_name: str, new_name: str) -> str:
    """Markdown: verdict, a base/new table (median, quartiles, steps), and the reason.

    Example:
        >>> from torchdoctor.analyze.gate import step_gate
        >>> g = step_gate({"step_ms": {"median": 10.0, "q1": 9.0, "q3": 10.5}},
        ...               {"step_ms": {"median": 30.0, "q1": 29.0, "q3": 31.0}}, 5.0)
        >>> "FAIL" in render_gate(g, "a", "b")
        True
    """
    base, new = gate["base"], gate["new"]
    verdict = "FAIL" if gate["slower"] else "PASS"
    threshold = f"{gate['threshold_pct']:g}%"
    lines = [
        f"## torchdoctor step-time gate: {verdict}",
        "",
        f"| | base (`{escape(base_name)}`) | new (`{escape(new_name)}`) |",
        "|---|---:|---:|",
        f"| median step | {fmt_ms(base['median'])} | {fmt_ms(new['median'])} |",
        f"| q1 - q3 | {fmt_ms(base['q1'])} - {fmt_ms(base['q3'])} | "
        f"{fmt_ms(new['q1'])} - {fmt_ms(new['q3'])} |",
        f"| steps | {base['steps'] or '?'} | {new['steps'] or '?'} |",
        "",
    ]
    change = f"{gate['delta_ms']:+.3g} ms ({gate['delta_pct']:+.3g}%)"
    if gate["slower"]:
        reason = (
            f"new is slower by {change}: beyond the {threshold} threshold and beyond the "
            f"measured spread (new's q1 {fmt_ms(new['q1'])} > base's q3 {fmt_ms(base['q3'])})."
        )
    elif not gate["beyond_threshold"]:
        reason = f"median change {change} is within the {threshold} threshold."
    else:
        reason = (
            f"median change {change} exceeds the {threshold} threshold but not the measured "
            f"spread (the interquartile ranges overlap: new's q1 {fmt_ms(new['q1'])} <= "
            f"base's q3 {fmt_ms(base['q3'])}), so it may be noise; rerun with more steps to decide."
        )
    lines.append(f"**{verdict}:** {reason}")
    if gate.get("prob_slower") is not None:
        lines.append(
            f"A new step is slower than a base step with probability {gate['prob_slower']:.2f} "
            "(0.5 = no difference)."
        )
    return "\n".join(lines) + "\n"

"""Console report (rich): the module tree, the phases, hot lines, host syncs and top advice.

Composes the profiler's tree renderer (``render/tree.py``: title, phases line, module tree) and
the sync-audit table (``render/syncs.py``); the advice panel is drawn here.

Example:
    >>> from torchdoctor.session import Session
    >>> "torchdoctor report" in render_console(Session.new("demo", with_environment=False))
    True
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from torchdoctor.render.markdown import gain_text, session_advice
from torchdoctor.session_read import (
    error_text,
    fmt_ms,
    incomplete_text,
    no_advice_text,
    step_count,
    step_ms,
)

TOP_ADVICE = 5


def _tree(session: Mapping[str, Any], width: int | None = None) -> list[Any]:
    """The profiler's tree renderables: title, phases line, module tree table, notes."""
    from rich.text import Text

    if not session.get("tree"):
        return [Text("(no module tree recorded)", style="dim")]
    from torchdoctor.render.tree import render_tree

    return [
        Text(part) if isinstance(part, str) else part for part in render_tree(session, width=width)
    ]


def _sync_table(session: Mapping[str, Any], width: int | None = None) -> Any:
    from torchdoctor.render.syncs import render_sync_table

    return render_sync_table(session, width=width)


def _indented(text: str, style: str = "") -> Any:
    from rich.padding import Padding
    from rich.text import Text

    return Padding(Text(text, style=style), (0, 0, 0, 3))


def _advice(advice: list[dict[str, Any]], limit: int, empty: str = "") -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    if not advice:
        return Panel(Text(empty or "No rule found a problem worth fixing."), title="Advice")
    parts = []
    for item in advice[:limit]:
        head = Text(f"{item.get('priority', '?')}. ", style="bold")
        head.append(str(item.get("title", "")), style="bold")
        parts.append(head)
        # wrapped lines keep their indent (readable at 80 columns)
        parts.append(
            _indented(f"gain: {gain_text(item)} · confidence {item.get('confidence')}", "green")
        )
        for line in (item.get("evidence") or [])[:3]:
            parts.append(_indented(f"- {line}"))
        if item.get("fix"):
            parts.append(_indented(f"fix: {item['fix']}", "cyan"))
    if len(advice) > limit:
        parts.append(
            Text(f"... {len(advice) - limit} more in the Markdown/HTML report", style="dim")
        )
    return Panel(Group(*parts), title=f"Top advice ({min(limit, len(advice))} of {len(advice)})")


def console_renderables(
    session: Mapping[str, Any], top: int = TOP_ADVICE, width: int | None = None
) -> list[Any]:
    """The report as a list of rich renderables (print them with a rich Console).

    Example:
        >>> len(console_renderables({"label": "x", "tree": None, "advice": []})) >= 3
        True
    """
    from rich.rule import Rule
    from rich.text import Text

    advice = session_advice(session)
    env = session.get("environment") or {}
    step = step_ms(session)
    header = Text(
        f"step {fmt_ms(step) if step > 0 else '-'} · "
        f"{step_count(session)} steps · {env.get('device') or '?'}"
    )
    items: list[Any] = [
        Rule(Text(f"torchdoctor report: {session.get('label') or 'session'}")),
    ]
    incomplete = incomplete_text(session)
    if incomplete:  # a checkpoint (collect/checkpoint.py): say so before any number
        items.append(Text(incomplete, style="bold yellow"))
    error = error_text(session)
    if error:  # the script failed: the first thing to know, before any number
        items.append(Text(error, style="bold red"))
    if not session.get("tree"):
        items.append(header)
    if session.get("interrupted") and not session.get("tree"):
        items.append(
            Text("collection was interrupted; numbers cover the steps seen", style="bold yellow")
        )
    items += _tree(session, width)
    from torchdoctor.render.hot_lines import rich_hot_lines
    from torchdoctor.render.other_lines import rich_other_lines

    items += rich_hot_lines(session)
    items += rich_other_lines(session)
    if session.get("syncs"):
        items.append(_sync_table(session, width))
    items.append(_advice(advice, top, no_advice_text(session)))
    return items


def render_console(
    session: Mapping[str, Any], width: int = 110, color: bool = False, top: int = TOP_ADVICE
) -> str:
    """The console report as text (ANSI colors when ``color``).

    Example:
        >>> text = render_console({"label": "x", "tree": None, "advice": []})
        >>> "No rule found a problem" in text
        True
    """
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        color_system=("standard" if color else None),
        highlight=False,
        soft_wrap=False,
    )
    for item in console_renderables(session, top, width):
        console.print(item)
    return buffer.getvalue()

"""Console report (rich): the module tree, the phases, the host syncs and the top advice.

Composes the profiler's tree renderer (``render/tree.py``) and the sync-audit table
(``render/syncs.py``); the phase table and the advice panel are drawn here.

Example:
    >>> from torchdoctor.session import Session
    >>> "torchdoctor report" in render_console(Session.new("demo", with_environment=False))
    True
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import center, step_ms
from torchdoctor.render.markdown import PHASES, gain_text, session_advice
from torchdoctor.render.markdown_text import fmt_ms

TOP_ADVICE = 5
MAX_SYNC_LINES = 10


def _tree(session: Mapping[str, Any]) -> Any:
    from rich.text import Text

    if not session.get("tree"):
        return Text("(no module tree recorded)", style="dim")
    from torchdoctor.render import tree as tree_renderer

    rich_tree = getattr(tree_renderer, "render_tree_rich", None)
    if rich_tree is not None:
        return rich_tree(session)
    return Text(tree_renderer.render_tree_text(session))


def _phases(session: Mapping[str, Any]) -> Any:
    from rich.table import Table
    from rich.text import Text

    step = step_ms(session)
    phases = session.get("phases") or {}
    table = Table(title="Phases (per step)", title_justify="left")
    table.add_column("phase")
    table.add_column("ms", justify="right")
    table.add_column("% of step", justify="right")
    table.add_column("", justify="left")
    for name in [p for p in PHASES if p in phases] + sorted(set(phases) - set(PHASES)):
        value = center(phases[name])
        share = 100 * value / step if step > 0 else 0.0
        table.add_row(Text(name), fmt_ms(value), f"{share:.0f}%", "█" * round(share / 4))
    return table


def _sync_table(session: Mapping[str, Any]) -> Any:
    try:
        from torchdoctor.render.syncs import render_sync_table
    except ImportError:
        render_sync_table = None
    if render_sync_table is not None:
        return render_sync_table(session)
    from rich.table import Table
    from rich.text import Text

    records = sorted(session.get("syncs") or [], key=lambda r: -float(r.get("per_step") or 0))
    table = Table(title="Host syncs (by source line)", title_justify="left")
    for column in ("where", "source", "kind", "per step", "phase", "stall"):
        table.add_column(column, justify="right" if column == "per step" else "left")
    for r in records[:MAX_SYNC_LINES]:
        stall = r.get("stall_ms")
        cells = (
            f"{os.path.basename(str(r.get('file') or '?'))}:{r.get('line', '?')}",
            str(r.get("op") or ""),
            str(r.get("kind")),
            f"{float(r.get('per_step') or 0):g}",
            str(r.get("phase") or "-"),
            fmt_ms(stall) if isinstance(stall, (int, float)) else "would sync on CUDA",
        )
        table.add_row(*(Text(cell) for cell in cells))  # Text: session strings are not markup
    if len(records) > MAX_SYNC_LINES:
        table.caption = f"... {len(records) - MAX_SYNC_LINES} more line(s) in the session JSON"
    return table


def _advice(advice: list[dict[str, Any]], limit: int) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    if not advice:
        return Panel(Text("No rule found a problem worth fixing."), title="Advice")
    parts = []
    for item in advice[:limit]:
        head = Text(f"{item.get('priority', '?')}. ", style="bold")
        head.append(str(item.get("title", "")), style="bold")
        parts.append(head)
        parts.append(
            Text(f"   gain: {gain_text(item)} · confidence {item.get('confidence')}", style="green")
        )
        for line in (item.get("evidence") or [])[:3]:
            parts.append(Text(f"   - {line}"))
        if item.get("fix"):
            parts.append(Text(f"   fix: {item['fix']}", style="cyan"))
    if len(advice) > limit:
        parts.append(
            Text(f"... {len(advice) - limit} more in the Markdown/HTML report", style="dim")
        )
    return Panel(Group(*parts), title=f"Top advice ({min(limit, len(advice))} of {len(advice)})")


def console_renderables(session: Mapping[str, Any], top: int = TOP_ADVICE) -> list[Any]:
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
        f"{len(session.get('steps') or [])} steps · {env.get('device') or '?'}"
    )
    items: list[Any] = [
        Rule(Text(f"torchdoctor report: {session.get('label') or 'session'}")),
        header,
    ]
    if session.get("interrupted"):
        items.append(
            Text("collection was interrupted; numbers cover the steps seen", style="bold yellow")
        )
    items += [_tree(session), _phases(session)]
    if session.get("syncs"):
        items.append(_sync_table(session))
    items.append(_advice(advice, top))
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
    for item in console_renderables(session, top):
        console.print(item)
    return buffer.getvalue()

"""Console rendering of a Session's module tree and step phases (rich). Never measures.

Columns: total ms (forward + backward, mean over profiled steps), % of parent, % of step, a
bar, forward and backward ms, activation memory saved for backward, calls per step. Repeated
siblings are grouped (``layers[0-11]  (12 x ~11.2 ms)``) by ``analyze.tree``; small entries can
be hidden with ``min_pct`` (the hidden time stays in the parent, so the shown rows still add up
with the ``(self)`` row).

Example:
    >>> from torchdoctor.session import Session
    >>> print(render_tree_text(Session.new("empty", with_environment=False)))
    (no module tree recorded)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from torchdoctor.analyze.kernel_time import kernel_time_text
from torchdoctor.analyze.tree import group_repeated_siblings, with_percentages
from torchdoctor.render.run_time import run_time_text
from torchdoctor.session_read import PHASES, center, contention_share, fmt_count, walk

#: the tree table's columns, in display order ("" is the bar)
COLUMNS = ("module / region", "total ms", "% parent", "% step", "", "fwd ms", "bwd ms",
           "saved act.", "calls")  # fmt: skip
#: columns dropped first when the table is wider than the console
DROP_ORDER = ("saved act.", "", "% parent", "calls", "fwd ms", "bwd ms", "% step")
#: blank columns between two table columns (rich: one pad each side)
_GAP = 2


def fitting_columns(
    rows: list[dict[str, Any]], columns: list[str], width: int | None, drop_order: Sequence[str],
    min_widths: dict[str, int] | None = None,
) -> list[str]:
    """``columns`` minus the fewest of ``drop_order`` (in that order) so the table's natural
    width (widest cell or header per column, or its ``min_widths`` entry, plus gaps) is at most
    ``width``.

    Example:
        >>> rows = [{"a": "x" * 10, "b": "y" * 10, "c": "z" * 10}]
        >>> fitting_columns(rows, ["a", "b", "c"], 25, ["c", "b"])
        ['a', 'b']
        >>> fitting_columns(rows, ["a", "b", "c"], 25, ["c", "b"], {"a": 14})
        ['a']
    """
    kept = list(columns)
    least = min_widths or {}

    def natural() -> int:
        widths = [max([len(c), least.get(c, 0), *(len(str(r.get(c, ""))) for r in rows)])
                  for c in kept]  # fmt: skip
        return sum(widths) + _GAP * (len(kept) - 1)

    for column in drop_order:
        if width is None or natural() <= width:
            break
        if column in kept:
            kept.remove(column)
    return kept


def format_bytes(value: int | float | None) -> str:
    """Human-readable bytes ('-' for None).

    Example:
        >>> format_bytes(1536), format_bytes(None)
        ('1.5 KB', '-')
    """
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


def format_ms(value: float) -> str:
    """Milliseconds with three significant digits (no exponent; whole above 100).

    Example:
        >>> format_ms(134.04), format_ms(25.0), format_ms(0.01234), format_ms(0.0)
        ('134', '25', '0.0123', '0')
    """
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) < 5e-5:  # float residue (a (self) row's 5.55e-18): no exponent in a report
        return "0"
    return f"{value:.3g}"


def _bar(pct: float, width: int = 12) -> str:
    filled = max(0.0, min(1.0, pct / 100.0)) * width
    full = int(filled)
    return "█" * full + ("▌" if filled - full >= 0.5 else "") or "·"


#: a detailed step costing this much more than a light one gets a caveat under the headline
HEAVY_OVERHEAD_PCT = 50.0


def detailed_step_ms(session: Any) -> float:
    """The detailed steps' time when detail windows left some steps light (the tree and the
    phases come from the detailed steps: their shares are of that time), else 0.

    Example:
        >>> detailed_step_ms({"tree": {"total_ms": {"median": 5.0}},
        ...                   "config": {"steps": 100, "detail": {"detailed_count": 10}}})
        5.0
        >>> detailed_step_ms({"tree": {"total_ms": {"median": 5.0}}, "config": {"steps": 10}})
        0.0
    """
    config = session.get("config") or {}
    seen = config.get("steps", len(session.get("steps") or []))
    detailed = center((session.get("tree") or {}).get("total_ms"))
    windowed = 0 < (config.get("detail") or {}).get("detailed_count", seen) < seen
    return float(detailed) if windowed and detailed > 0 else 0.0


def one_step_text(session: Any) -> str:
    """What a session of one step measured: the whole run (no step boundary), the partial step
    after the last boundary (none complete after warm-up: a script that stopped early), or
    its one step.

    Example:
        >>> one_step_text({"config": {"step_boundary": "whole_run"}})
        'the whole run, one step (no step boundary was seen)'
    """
    config = session.get("config") or {}
    if config.get("step_boundary") == "whole_run":
        return "the whole run, one step (no step boundary was seen)"
    if any(str(n).startswith("no complete step after warm-up") for n in config.get("notes") or ()):
        return "the partial step after the last boundary (no complete step after warm-up)"
    return "its one step"


def heavy_overhead_text(session: Any) -> str | None:
    """The caveat on a tree whose detailed steps the profiler made much slower (many small
    module and torch calls: its measured cost >= HEAVY_OVERHEAD_PCT of a detailed step), else
    None.

    Example:
        >>> heavy_overhead_text({"config": {"profiler_overhead": {"overhead_pct": 254.0,
        ...                                                       "source": "measured"}}})[:50]
        'the profiler makes a detailed step here ~254% slow'
        >>> heavy_overhead_text({"config": {}}) is None
        True
    """
    cost = ((session.get("config") or {}).get("profiler_overhead") or {})
    pct = cost.get("overhead_pct")
    if not isinstance(pct, (int, float)) or pct < HEAVY_OVERHEAD_PCT:
        return None
    measured = cost.get("source") in ("measured", "window bound")
    how = "measured against the light steps" if measured else "estimated"
    return (
        f"the profiler makes a detailed step here ~{pct:.0f}% slower ({how}: its hooks and "
        "timers on many small calls): the tree's ms are inflated, most in small modules and "
        "(self) rows; the step times above are mostly light steps', without them"
    )


def contention_text(session: Any) -> str | None:
    """The caveat under a report's headline when the profiled thread waited for a CPU core
    for a sizeable share of the steps' time (``session_read.contention_share``), else None.

    Example:
        >>> steps = [{"wall_ms": 10.0, "cpu_ms": 5.0, "cpu_wait_ms": 5.0}] * 5
        >>> contention_text({"steps": steps})[:60]
        "the profiled thread waited for a CPU core 50% of the steps' "
        >>> contention_text({"steps": steps[:1]}) is None
        True
    """
    share = contention_share(session)
    if share is None:
        return None
    return (
        f"the profiled thread waited for a CPU core {100 * share:.0f}% of the steps' time "
        "(other processes held the cores): every time here includes that wait"
    )


def render_tree(
    session: Any,
    *,
    group: bool = True,
    max_depth: int | None = None,
    min_pct: float = 0.0,
    memory: bool = True,
    width: int | None = None,
) -> list[Any]:
    """Rich renderables (a title line, the phases line, the tree table, notes).

    With ``width``, columns are dropped by :data:`DROP_ORDER` until the table fits (headers
    are never cut); the module column is always kept.

    Example:
        >>> from torchdoctor.session import Session
        >>> render_tree(Session.new("e", with_environment=False))[0]
        '(no module tree recorded)'
    """
    from rich.table import Table
    from rich.text import Text

    tree = session["tree"]
    if not tree:
        return ["(no module tree recorded)"]
    step = session.get("step_ms") or tree.get("total_ms") or {}
    step_ms = center(step)
    if group:
        tree = group_repeated_siblings(tree)
    config = session.get("config") or {}
    detail = config.get("detail") or {}
    # with detail windows the tree and phases come from the detailed steps: their shares are
    # of those steps' own time (light steps, without hooks, are faster or slower under load)
    detailed_ms = detailed_step_ms(session)
    windowed = detailed_ms > 0
    tree = with_percentages(tree, detailed_ms if windowed else step_ms)
    count = config.get("steps", len(session.get("steps") or []))
    title = Text(
        f"{session.get('label') or 'step'}: {format_ms(step_ms)} ms per step "
        f"(median {format_ms(step.get('median', step_ms))}, "
        f"q1-q3 {format_ms(step.get('q1', step_ms))}-{format_ms(step.get('q3', step_ms))}; "
        f"{count} steps, timing: {config.get('timing', '?')})"
        if count != 1 else
        f"{session.get('label') or 'step'}: {format_ms(step_ms)} ms in {one_step_text(session)} "
        f"(timing: {config.get('timing', '?')})"
    )  # fmt: skip
    if windowed:
        left = len(detail.get("outlier_steps") or ())  # (periodic work: see the notes)
        busy = len(detail.get("busy_steps") or ())  # (waited for a core: see the notes)
        out = [f"{left} outlier{'s' if left > 1 else ''}"] if left else []
        out += [f"{busy} that waited for a CPU core"] if busy else []
        used = f"{detail['detailed_count'] - left - busy} detailed steps" + (
            f" ({' and '.join(out)} left out)" if out else "")
        title.append(f"; tree and phases from {used}, {format_ms(detailed_ms)} ms each")
    caveats = [heavy_overhead_text(session) if windowed else None, contention_text(session),
               kernel_time_text(session)]  # (the process's kernel time: analyze/kernel_time.py)
    for caveat in caveats:
        if caveat:
            title.append(f"\n{caveat}", style="yellow")
    elsewhere = run_time_text(session)
    if elsewhere:
        title.append(f"\n{elsewhere}")
    phases = session.get("phases") or {}
    parts = []
    share_of = detailed_ms if windowed else step_ms
    for name in PHASES:
        value = center(phases.get(name))
        pct = 100.0 * value / share_of if share_of else 0.0
        parts.append(f"{name} {format_ms(value)} {pct:.0f}%")
    phase_line = Text("phases (ms): " + " | ".join(parts))
    inference = session.get("inference") or {}
    if inference.get("train_inference_ratio"):
        ratio = inference.get("backward_forward_ratio")
        phase_line.append(
            f"\ntraining step {format_ms(inference['train_step_ms'])} ms vs inference "
            f"{format_ms(inference['inference_ms'])} ms: "
            f"{inference['train_inference_ratio']:.1f}x"
            + (f"; backward/forward {ratio:.2f}x" if ratio else "")
        )

    show_memory = memory and any(
        n.get("activation_bytes") for n, _ in walk(tree) if n.get("kind") != "root"
    )
    rows: list[dict[str, Any]] = []

    def add(node: dict[str, Any], prefix: str, last: bool, depth: int, parent_path: str = "") -> None:
        if depth == 0:
            label = str(node.get("name") or "step")
        else:
            label = prefix + ("└─ " if last else "├─ ") + _label(node, parent_path)
        calls = node.get("calls_per_step") or 0.0
        rows.append(
            {
                "module / region": label,
                "total ms": format_ms(center(node.get("total_ms"))),
                "% parent": f"{node['pct_of_parent']:.1f}%",
                "% step": f"{node['pct_of_step']:.1f}%",
                "": _bar(node["pct_of_step"]),
                "fwd ms": format_ms(center(node.get("forward_ms"))),
                "bwd ms": format_ms(center(node.get("backward_ms"))),
                "saved act.": format_bytes(node.get("activation_bytes")),
                "calls": "" if node.get("kind") in ("self", "root") else fmt_count(calls),
            }
        )
        if max_depth is not None and depth >= max_depth:
            return
        children = [
            c
            for c in node.get("children") or []
            if c["pct_of_step"] >= min_pct or c.get("kind") == "self"
        ]
        child_prefix = prefix + ("   " if last else "│  ") if depth else ""
        for i, child in enumerate(children):
            add(child, child_prefix, i == len(children) - 1, depth + 1, str(node.get("path") or ""))

    add(tree, "", True, 0)
    label_width = _label_width(tree, max_depth)  # (the table keeps it: count it in the fit)
    columns = fitting_columns(rows, [c for c in COLUMNS if c != "saved act." or show_memory],
                              width, DROP_ORDER, {"module / region": label_width})  # fmt: skip
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in ("module / region", "") else "right",
            no_wrap=True,
            min_width=label_width if column == "module / region" else None,
        )
    for row in rows:
        table.add_row(*(Text(row[c]) for c in columns))
    out: list[Any] = [title, phase_line, table]
    notes = config.get("notes") or []
    if notes:
        out.append(Text("notes: " + "; ".join(notes), style="dim"))
    if session.get("interrupted"):
        out.append(Text("collection was interrupted (see session['error'])", style="yellow"))
    return out


def display_name(node: dict[str, Any], parent_path: str = "") -> str:
    """A tree row's name: the module's attribute name, or, for an item of a list never called
    itself (``down_blocks.0`` under a UNet whose ``down_blocks`` and ``up_blocks`` both hold a
    ``0``), its path below the parent row.

    Example:
        >>> display_name({"kind": "module", "name": "0", "path": "down_blocks.0"}, "UNet")
        'down_blocks.0'
        >>> display_name({"kind": "module", "name": "0", "path": "up.1.resnets.0"}, "up.1")
        'resnets.0'
        >>> display_name({"kind": "module", "name": "wte", "path": "transformer.wte"}, "GPT")
        'wte'
        >>> display_name({"kind": "group", "name": "0[0-1]", "path": "m.downs.0[0-1]"}, "m")
        'downs.0[0-1]'
        >>> display_name({"kind": "module", "name": "hyper", "path": "transform.transforms.0.hyper"})
        'transform.transforms.0.hyper'

    A model's part called outside the model, straight under the step (zuko's flows run their
    transforms' ``hyper`` networks from ``log_prob``, after ``flow(c)`` returned: three root
    rows all named ``hyper``), is shown by its path in the model.
    """
    name = str(node.get("name"))
    path = str(node.get("path") or "")
    if node.get("kind") == "module" and not parent_path and path.endswith("." + name):
        return path
    item = name.isdigit() if node.get("kind") == "module" else (
        node.get("kind") == "group" and name[:1].isdigit())  # (a group of items: 0[0-1])
    if not item or not path.endswith("." + name):
        return name
    if parent_path and path.startswith(parent_path + "."):
        return path[len(parent_path) + 1 :]
    return path


def _label(node: dict[str, Any], parent_path: str = "") -> str:
    name = display_name(node, parent_path)
    if node.get("kind") == "group" and node.get("made_anew"):  # (copies: not all in a step)
        return f"{name}  ({node['group_count']} copies made anew)"
    if node.get("kind") == "group":
        return f"{name}  ({node['group_count']} x ~{format_ms(node['per_item_ms'])} ms)"
    if node.get("kind") == "region":
        return f"[{name}]"
    phase = _main_phase(node)  # the step's own (self) row: mostly data loading, say so
    if node.get("hot_lines"):  # a (self) row (or childless owner) points to its hot lines
        from torchdoctor.render.hot_lines import self_row_pointer

        if phase and not _holds_most(node):  # (its main phase is not at its heaviest line: a
            return f"{name}  {phase.rstrip()}"  # slow optimizer beside a logging line)
        return f"{name}  {phase.rstrip() + '; ' if phase else ''}{self_row_pointer(node)}"
    return f"{name}  {phase.rstrip()}" if phase else name


def _holds_most(node: dict[str, Any]) -> bool:
    """The row's heaviest hot line holds at least half of the row's time.

    Example:
        >>> _holds_most({"total_ms": {"mean": 10.0}, "hot_lines": [{"total_ms": {"mean": 6.0}}]})
        True
    """
    lines = node.get("hot_lines") or ()
    total, ms = center(node.get("total_ms")), center((lines[0] if lines else {}).get("total_ms"))
    return total > 0 and ms >= 0.5 * total


def _main_phase(node: dict[str, Any]) -> str:
    """The data, optimizer or other phase holding half of a row's time (the step's own
    ``(self)`` row holds them), else the two holding a quarter each (a VAE's 10.5 ms row read
    as its line main.py:81, which held little: data 4.72 and optimizer 2.85 ms), else ''.

    Example:
        >>> _main_phase({"total_ms": {"mean": 10.5}, "phases_ms": {"data": 4.72, "optimizer": 2.85}})
        'data 4.72 ms, optimizer 2.85 ms '
    """
    phases, total = node.get("phases_ms") or {}, center(node.get("total_ms"))
    ranked = sorted(phases.items(), key=lambda item: -item[1])
    shown = [f"{phase} {format_ms(ms)} ms" for phase, ms in ranked[:2] if ms >= 0.25 * total]
    major = ranked and total > 0 and ranked[0][1] >= 0.5 * total  # (one phase: it alone)
    return ", ".join(shown[:1] if major else shown) + " " if shown and total > 0 else ""


def _label_width(tree: dict[str, Any], max_depth: int | None) -> int:
    def visit(node: dict[str, Any], depth: int, parent_path: str) -> int:
        width = 3 * depth + len(_label(node, parent_path))
        width += 2 if node.get("kind") == "region" else 0
        if max_depth is not None and depth >= max_depth:
            return width
        path = str(node.get("path") or "")
        return max([width, *(visit(c, depth + 1, path) for c in node.get("children") or [])])

    return visit(tree, 0, "")


def render_tree_text(session: Any, *, width: int = 120, **options: Any) -> str:
    """The tree as plain text (no colour codes), for snapshots, logs and ``print``.

    Example:
        >>> from torchdoctor.session import Session
        >>> render_tree_text(Session.new("a", with_environment=False))
        '(no module tree recorded)'
    """
    from rich.console import Console

    parts = render_tree(session, width=width, **options)
    if len(parts) == 1 and isinstance(parts[0], str):
        return parts[0]
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, color_system=None, force_terminal=False, soft_wrap=False
    )
    for part in parts:
        console.print(part)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())

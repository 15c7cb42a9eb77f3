"""The tune table as text (rich) and as Markdown: knob, speedup with spread, warm-up/compile
cost, peak memory, drift, verdict; then graph breaks, the chosen set and its snippet.

Takes the plain tune dict (``session["tune"]``); computes nothing.

Example:
    >>> tune = {"baseline": {"step_ms": 12.0, "drift": 0.0}, "rows": [{"knob": "tf32",
    ...         "title": "TF32", "status": "skipped", "reason": "needs CUDA",
    ...         "verdict": "skipped"}], "chosen": [], "snippet": ""}
    >>> "needs CUDA" in render_tune_text(tune)
    True
    >>> render_tune_markdown(tune).splitlines()[0]
    '| knob | speedup (spread) | warm-up / compile | peak memory | drift | verdict |'
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from torchdoctor.session_read import fmt_ms

_STYLE = {"faster": "green", "rejected": "red", "failed": "red", "slower": "yellow"}


def fmt_speedup(speedup: Mapping[str, Any] | None) -> str:
    """``1.23x (1.18-1.27, 3 pairs)``; '-' when unmeasured.

    Example:
        >>> fmt_speedup({"median": 1.234, "low": 1.18, "high": 1.27, "pairs": 3})
        '1.23x (1.18-1.27, 3 pairs)'
    """
    if not speedup:
        return "-"
    pairs = speedup.get("pairs", 0)
    return (f"{speedup['median']:.3g}x ({speedup['low']:.3g}-{speedup['high']:.3g}, "
            f"{pairs} pair{'s' if pairs != 1 else ''})")  # fmt: skip


def fmt_bytes(value: float | None, signed: bool = False) -> str:
    """Bytes in MiB/GiB, 3 significant digits.

    Example:
        >>> fmt_bytes(3 * 2**20), fmt_bytes(-2**19, signed=True)
        ('3 MiB', '-0.5 MiB')
    """
    if value is None:
        return "-"
    sign = "+" if signed and value > 0 else ""
    if abs(value) >= 2**30:
        return f"{sign}{value / 2**30:.3g} GiB"
    return f"{sign}{value / 2**20:.3g} MiB"


def _cells(row: Mapping[str, Any]) -> list[str]:
    if row.get("status") in ("skipped", "not measured", "failed") and not row.get("speedup"):
        return [row.get("title") or row["knob"], "-", "-", "-", "-",
                f"{row.get('verdict')}: {row.get('reason')}"]  # fmt: skip
    cost = row.get("warmup_cost_s")
    memory = fmt_bytes(row.get("peak_memory_bytes"))
    if row.get("memory_delta_bytes") is not None:
        memory += f" ({fmt_bytes(row['memory_delta_bytes'], signed=True)})"
    drift = row.get("drift")
    verdict = row.get("verdict") or ""
    if row.get("reason"):
        verdict += f": {row['reason']}"
    return [
        row.get("title") or row["knob"], fmt_speedup(row.get("speedup")),
        "-" if cost is None else f"{cost:+.3g} s", memory,
        "-" if drift is None else f"{drift:.3g}", verdict,
    ]  # fmt: skip


def _rows(tune: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rows = [r for r in tune.get("rows") or () if r.get("status") != "skipped"]
    rows += [r for r in tune.get("rows") or () if r.get("status") == "skipped"]
    if tune.get("combination"):
        rows.insert(0, tune["combination"])
    return rows


def _breaks(tune: Mapping[str, Any]) -> list[str]:
    lines = []
    for row in tune.get("rows") or ():
        for item in row.get("graph_breaks") or ():
            hint = ""
            if ".item()" in str(item.get("reason")):
                hint = " (a .item() in forward breaks the graph: keep the value a tensor)"
            lines.append(f"{row['knob']}: graph break at {item.get('file')}:{item.get('line')}: "
                         f"{item.get('reason')}{hint}")  # fmt: skip
    return lines


def _header(tune: Mapping[str, Any]) -> str:
    baseline = tune.get("baseline") or {}
    drift = baseline.get("drift")
    plan = tune.get("plan") or {}
    text = f"baseline step {fmt_ms(baseline.get('step_ms'))}"
    if drift is not None:
        text += f", run-to-run drift {drift:.3g}"
    if plan:
        text += (f"; {plan.get('rounds')} round(s) of (baseline, knob) pairs, "
                 f"{plan.get('steps')} measured steps after {plan.get('warmup')} warm-up")  # fmt: skip
    return text


def render_tune_text(tune: Mapping[str, Any], width: int = 120) -> str:
    """The tune table, breaks, chosen set and snippet as plain text.

    Example:
        >>> tune = {"baseline": {"step_ms": 20.0, "drift": 0.001}, "chosen": ["channels_last"],
        ...         "rows": [{"knob": "channels_last", "status": "measured", "verdict": "faster",
        ...                   "speedup": {"median": 1.3, "low": 1.2, "high": 1.4, "pairs": 3}}],
        ...         "snippet": "model = model.to(memory_format=torch.channels_last)"}
        >>> lines = render_tune_text(tune, width=100).splitlines()
        >>> print(lines[0], *lines[-2:], sep="\\n")
        torchdoctor tune: baseline step 20 ms, run-to-run drift 0.001
        chosen: channels_last; enable it with:
        model = model.to(memory_format=torch.channels_last)
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    # session strings (script names, graph-break reasons, source) are never rich markup
    console = Console(file=buffer, width=width, color_system=None, highlight=False)
    console.print(f"torchdoctor tune: {_header(tune)}", markup=False)
    table = Table(show_lines=False)
    for name in ("knob", "speedup (spread)", "warm-up / compile", "peak memory", "drift",
                 "verdict"):  # fmt: skip
        table.add_column(name, overflow="fold")
    for row in _rows(tune):
        table.add_row(*map(Text, _cells(row)), style=_STYLE.get(row.get("verdict") or ""))
    console.print(table)
    for line in _breaks(tune):
        console.print(line, markup=False)
    for note in tune.get("notes") or ():
        console.print(f"note: {note}", markup=False)
    chosen = tune.get("chosen") or []
    if chosen:
        console.print(f"chosen: {' + '.join(chosen)}; enable it with:", markup=False)
        console.print(tune.get("snippet") or "", markup=False)
    else:
        console.print("chosen: nothing (no knob was measurably faster and still correct)")
    return buffer.getvalue()


def render_tune_markdown(tune: Mapping[str, Any]) -> str:
    """The tune table as Markdown (BENCHMARKS.md, reports).

    Example:
        >>> tune = {"baseline": {"step_ms": 20.0}, "chosen": ["channels_last"], "snippet": "",
        ...         "rows": [{"knob": "channels_last", "status": "measured", "verdict": "faster",
        ...                   "speedup": {"median": 1.3, "low": 1.2, "high": 1.4, "pairs": 3},
        ...                   "drift": 0.0, "warmup_cost_s": 0.5}]}
        >>> print(render_tune_markdown(tune).splitlines()[2])
        | channels_last | 1.3x (1.2-1.4, 3 pairs) | +0.5 s | - | 0 | faster |
    """
    lines = ["| knob | speedup (spread) | warm-up / compile | peak memory | drift | verdict |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for row in _rows(tune):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    lines += ["", _header(tune)]
    lines += [f"- {line}" for line in _breaks(tune)]
    chosen = tune.get("chosen") or []
    if chosen:
        lines += ["", f"chosen: {' + '.join(chosen)}", "", "```python",
                  tune.get("snippet") or "", "```"]  # fmt: skip
    return "\n".join(lines) + "\n"

"""``--live``: a one-screen summary on stderr, refreshed at step boundaries at most once a second.

While the script runs, :class:`LiveView` shows the step time (median of the recent steps, and
the last one), the phase shares, the modules with the most self time in the recent detailed
steps, and the syncs per step. It uses rich's ``Live`` display without its refresh thread: it
redraws when a step ends and a second has passed since the last redraw (a step longer than
that shows at its end). It is off when stderr is not a terminal (a log file gets no control
codes). The script's own output stays readable: what it prints goes above the summary (when
stdout is the same terminal), and a piped stdout is left alone.

The figures come from the profiler's recent step summaries (``collect/step_store.py``); this is
a view of the data being collected, not the report (which the run prints at exit).

Example:
    >>> import io
    >>> text = summary_lines({"steps": 12, "step_ms": 7.5, "last_ms": 7.0,
    ...                       "phases": {"forward": 0.4, "backward": 0.6}, "modules": [],
    ...                       "syncs_per_step": 2.0, "elapsed_s": 3.0, "label": "train.py"})
    >>> text[0]
    'torchdoctor live · train.py · 12 steps · 3.0 s'
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from torchdoctor.collect.syncs_fold import events_since
from torchdoctor.session_read import CONTENTION_SHARE, PHASES, fmt_ms, host_split, quantile

#: the least time between two redraws (seconds)
MIN_INTERVAL_S = 1.0
#: modules listed
TOP_MODULES = 5


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (the live view needs one).

    Example:
        >>> isinstance(stderr_is_terminal(), bool)
        True
    """
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def live_figures(profiler: Any, audit: Any = None, started: float | None = None) -> dict[str, Any]:
    """What the live view shows, from a running profiler's recent steps (and a sync audit);
    ``started``: ``time.monotonic()`` when the run began.

    Example:
        >>> import torch, torchdoctor
        >>> net = torch.nn.Linear(4, 4)
        >>> with torchdoctor.Profiler(net, syncs=False) as prof:
        ...     for _ in range(3):
        ...         net(torch.ones(1, 4)).sum().backward()
        ...         prof.step()
        ...     figures = live_figures(prof)
        >>> figures["steps"], [m["path"] for m in figures["modules"]]
        (3, ['Linear'])
    """
    profiler.flush_steps()  # steps wait to be summarized in batches (collect/step_queue.py)
    store = profiler.state.summaries
    recent = list(store.recent)
    walls = [s["wall_ms"] for s in recent]
    total = sum(walls) or 1.0
    phases = {p: sum(s["phases"].get(p, 0.0) for s in recent) / total for p in PHASES}
    rec = profiler._rec
    self_ms: dict[int, float] = {}
    detailed = [s for s in store.recent_detailed if s.get("forward") is not None]
    for s in detailed:
        inclusive = {n: s["forward"].get(n, 0.0) + s["backward"].get(n, 0.0)
                     for n in {*s["forward"], *s["backward"]}}  # fmt: skip
        own = dict(inclusive)
        for node, value in inclusive.items():
            up = rec.parent[node] if node < len(rec.parent) else -1
            if up > 0 and up in own:
                own[up] -= value
        for node, value in own.items():
            self_ms[node] = self_ms.get(node, 0.0) + max(0.0, value) / len(detailed)
    top = sorted(self_ms.items(), key=lambda item: -item[1])[:TOP_MODULES]
    step = quantile(walls, 0.5) if walls else 0.0
    timed = host_split(recent)  # (the thread's wait for a core: collect/host_time.py)
    waited = timed.wait_ms / timed.wall_ms if timed.wall_ms > 0 else None
    syncs = None
    if audit is not None and store.count:
        first = int(getattr(profiler, "warmup", 0) or 0)
        syncs = events_since(audit, first) / store.count
    return {
        "label": profiler.label or "run",
        "steps": store.count,
        "step_ms": step,
        "last_ms": walls[-1] if walls else 0.0,
        "phases": phases,
        "modules": [
            {
                "path": _display_path(rec, n),
                "self_ms": ms,
                "pct": 100.0 * ms / step if step else 0.0,
            }
            for n, ms in top
        ],  # fmt: skip
        "syncs_per_step": syncs,
        "cpu_wait_share": waited,
        "elapsed_s": time.monotonic() - started if started is not None else 0.0,
    }


def _display_path(rec: Any, node: int) -> str:
    """A node's names from the outermost module down (``Sequential.0``), regions in brackets."""
    names = []
    while node > 0:
        name = rec.name[node]
        names.append(f"[{name}]" if rec.kind[node] == "region" else name)
        node = rec.parent[node]
    return ".".join(reversed(names)) or "step"


def summary_lines(figures: dict[str, Any]) -> list[str]:
    """The live summary as plain lines (3 significant digits).

    Example:
        >>> figures = {"label": "demo", "steps": 4, "elapsed_s": 2.0, "step_ms": 12.5,
        ...            "last_ms": 13.0, "phases": {"forward": 0.6, "backward": 0.4},
        ...            "modules": [], "syncs_per_step": 2.0, "cpu_wait_share": 0.3}
        >>> for line in summary_lines(figures):
        ...     print(line)
        torchdoctor live · demo · 4 steps · 2.0 s
        step time  12.5 ms (median of recent steps), last 13 ms
        phases     forward 60% · backward 40%
        syncs      2 per step
        machine    busy: the loop waited for a CPU core 30% of the recent steps' time (other processes hold the cores)
    """
    lines = [
        f"torchdoctor live · {figures['label']} · {figures['steps']} steps · "
        f"{figures['elapsed_s']:.1f} s"
    ]
    if not figures["steps"]:
        return [*lines, "waiting for the first profiled step..."]
    lines.append(f"step time  {fmt_ms(figures['step_ms'])} (median of recent steps), "
                 f"last {fmt_ms(figures['last_ms'])}")  # fmt: skip
    shares = [f"{p} {100 * v:.0f}%" for p, v in figures["phases"].items() if v >= 0.005]
    lines.append("phases     " + (" · ".join(shares) or "-"))
    if figures["modules"]:
        lines.append("top modules (self time, recent detailed steps):")
        for module in figures["modules"]:
            lines.append(f"  {module['path']:<40} {fmt_ms(module['self_ms']):>10} "
                         f"{module['pct']:>5.1f}%")  # fmt: skip
    syncs = figures.get("syncs_per_step")
    if syncs is not None:
        lines.append(f"syncs      {syncs:.3g} per step")
    waited = figures.get("cpu_wait_share")
    if waited is not None and waited >= CONTENTION_SHARE:
        lines.append(f"machine    busy: the loop waited for a CPU core {100 * waited:.0f}% of "
                     "the recent steps' time (other processes hold the cores)")  # fmt: skip
    return lines


class LiveView:
    """The live display of a running profiler on stderr; a step listener.

    Example:
        >>> view = LiveView(enabled=False)
        >>> view.start(); view(None); view.stop()  # off: does nothing
    """

    def __init__(
        self,
        audit: Any = None,
        *,
        enabled: bool | None = None,
        min_interval: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit = audit
        self.enabled = stderr_is_terminal() if enabled is None else enabled
        self.min_interval = min_interval
        self.clock = clock
        self.last = -float("inf")
        self.started = time.monotonic()
        self.redraws = 0
        self._live: Any = None

    def start(self) -> None:
        """Open the display (nothing when off)."""
        if not self.enabled:
            return
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        try:
            stdout_shared = sys.stdout.isatty()
        except (AttributeError, ValueError):
            stdout_shared = False
        self._live = Live(
            Text("torchdoctor live · waiting for the first step..."),
            console=Console(file=sys.stderr),
            auto_refresh=False,  # no thread: redrawn at step boundaries
            transient=True,  # the report printed at exit replaces it
            redirect_stdout=stdout_shared,  # the script's prints go above the summary
            redirect_stderr=True,
        )
        self._live.start(refresh=True)

    def __call__(self, profiler: Any) -> None:
        """At a step boundary: redraw if a second has passed since the last redraw."""
        if self._live is None or profiler is None:
            return
        now = self.clock()
        if now - self.last < self.min_interval:
            return
        self.last = now
        try:
            from rich.text import Text

            text = "\n".join(summary_lines(live_figures(profiler, self.audit, self.started)))
            self._live.update(Text(text), refresh=True)
            self.redraws += 1
        except Exception:  # never break the user's run over the display
            self.stop()

    def stop(self) -> None:
        """Close the display (restores stdout and stderr)."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

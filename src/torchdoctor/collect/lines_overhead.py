"""What the hot-lines collector costs per torch call it times, and per call it only sees (for
the session's own estimate).

Calibrated once per process, like the sync audit's cost: a loop of small torch calls written
as user code (compiled under a file name outside torch, the standard library and torchdoctor,
so the collector times every call) runs with and without a :class:`LineCollector` on a scratch
recorder, alternating; the fastest round of each is kept (other processes only add time). Never
while a profiler runs (a checkpoint then reports no estimate for the lines yet).

Example:
    >>> line_call_cost_us() >= 0.0
    True
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from torchdoctor.collect.calibration_cache import recall, remember
from torchdoctor.collect.clocks import CpuClock
from torchdoctor.collect.profiler_overhead import autograd_on
from torchdoctor.collect.state import STATE

_ROUNDS = 5
_ITERATIONS = 200
_SOURCE = (
    "import torch\n"
    "def loop(x, n):\n    for _ in range(n):\n        x = x * 1.0 + 0.0\n    return x\n"
    "def python_level(x, n):\n    for _ in range(n):\n"
    "        x = torch.nn.functional.layer_norm(x, x.shape[-1:])\n"
    "        x = torch.nn.functional.dropout(x, 0.0)\n    return x\n"
    "def single(x, n):\n    for _ in range(n):\n        x = x * 1.0\n    return x\n"
)
# (with grad: the backward of the nodes the collector hooks is part of the cost)
_cost_us: dict[str, float] = {}


def _user_loop(name: str = "loop"):
    namespace: dict = {}
    exec(compile(_SOURCE, "/torchdoctor-calibration/user_loop.py", "exec"), namespace)
    return namespace[name]


def line_call_cost_us(part: str = "timed") -> float:
    """Microseconds the hot-lines collector adds to each torch call it times (``"timed"``: all
    of it, backward hooks included, averaged over the steps that hook and those that carry;
    ``"outside"``: the part its own clock does not see, the mode's dispatch and autograd
    running the hooks; ``"later"``: that part for calls that make no autograd node, the mode's
    dispatch alone, which a line's later calls hold in the gaps its clock counts) or only sees
    (``"seen"``: the dispatch and early return of the calls of library modules and outside the
    counted phases); 0.0 while a profiler runs and nothing was calibrated yet.

    Example:
        >>> 0.0 <= line_call_cost_us("outside") <= line_call_cost_us() < 1e4
        True
    """
    if part not in _PARTS:
        raise ValueError(f"part must be one of {_PARTS}, got {part!r}")
    if not _cost_us:  # (another run's, on this machine: collect/calibration_cache.py)
        kept = recall("line_calls")
        if isinstance(kept, dict) and set(_PARTS) <= kept.keys():
            _cost_us.update(kept)
    if _cost_us:
        return _cost_us[part]
    if STATE.profiler is not None:
        return 0.0
    _calibrate()
    remember("line_calls", dict(_cost_us))
    return _cost_us[part]


_PARTS = ("timed", "outside", "later", "seen", "seen_python")


@contextmanager
def _scratch_collector(active: bool = True, stepped: bool = True) -> Iterator[Any]:
    """A started :class:`LineCollector` on a scratch recorder (a step begun when ``stepped``;
    ``active=False``: every call is only dispatched), closed and its handles released after."""
    from torchdoctor.collect.lines import LineCollector
    from torchdoctor.collect.recorder import Recorder

    rec = Recorder(CpuClock(), backward=False, memory=False)
    if stepped:
        rec.new_step(rec.now())
    collector = LineCollector(rec)
    collector.start()
    collector.active = active
    try:
        yield collector
    finally:
        collector.close()
        rec.release_handles()


def _run(loop: Any, x: torch.Tensor, collector: Any = None) -> int:
    """Thread CPU ns of the loop and the backward of what it built (under ``collector``)."""
    start = time.thread_time_ns()
    y = loop(x, _ITERATIONS)
    y.sum().backward()
    took = time.thread_time_ns() - start
    if collector is not None:
        collector.end_step()
    return took


@autograd_on()
def _calibrate() -> None:
    from torchdoctor.collect.lines import BACKWARD_EVERY

    loop = _user_loop()
    x = torch.zeros(4, requires_grad=True)
    plain: list[int] = []
    # "timed": a step that hooks the lines' backward; "carried": one that does not (the
    # collector hooks one collected step of BACKWARD_EVERY, see collect/lines.py)
    runs: dict[str, list[tuple[int, int]]] = {"timed": [], "carried": [], "seen": []}
    _run(loop, x)
    for _ in range(_ROUNDS):
        plain.append(_run(loop, x))
        for part, times in runs.items():
            with _scratch_collector(active=part != "seen") as collector:
                if part == "carried":  # a second step: backward per call known, no hooks
                    _run(loop, x, collector)
                took = _run(loop, x, collector)
                times.append((took, collector.step_own_ns))
    calls = 2 * _ITERATIONS  # a multiply and an add per iteration
    every = BACKWARD_EVERY
    hooked, carried = min(runs["timed"]), min(runs["carried"])
    fastest = (hooked[0] + (every - 1) * carried[0]) / every  # a collected step on average
    inside = (hooked[1] + (every - 1) * carried[1]) / every
    _cost_us["timed"] = max(0.0, (fastest - min(plain)) / 1e3 / calls)
    _cost_us["outside"] = max(0.0, _cost_us["timed"] - inside / 1e3 / calls)
    _cost_us["seen"] = max(0.0, (min(runs["seen"])[0] - min(plain)) / 1e3 / calls)
    _cost_us["seen_python"] = max(0.0, _python_level_dispatch_us() - _cost_us["seen"])
    _cost_us["later"] = min(_cost_us["outside"], _no_grad_outside_us(loop))


def _no_grad_outside_us(loop: Any) -> float:
    """The collector's cost outside its clock per call that makes no autograd node: the
    loop's thread time under a collector less the plain loop's and the collector's own."""
    x = torch.zeros(4)
    plain: list[int] = []
    collected: list[int] = []
    for _ in range(_ROUNDS):
        start = time.thread_time_ns()
        loop(x, _ITERATIONS)
        plain.append(time.thread_time_ns() - start)
        with _scratch_collector() as collector:
            start = time.thread_time_ns()
            loop(x, _ITERATIONS)
            took = time.thread_time_ns() - start
            collector.end_step()
            collected.append(took - collector.step_own_ns)
    return max(0.0, (min(collected) - min(plain)) / 1e3 / (2 * _ITERATIONS))


def in_clock_cost_us() -> float:
    """Microseconds a timed call adds inside the line's own clock when it is its execution's
    only call (``t[c] = ...`` in a per-element loop): the call made from the collector's
    handler. Its dispatch to the mode, the handler's bookkeeping and the sync audit's mode
    (above the lines' in a profiled run: ``collect/profiler.py``) fall outside the line's time;
    only the gap before a later call of the same execution holds them (char-rnn's
    ``tensor[c] = all_characters.index(string[c])``, 40,000 executions a step: 5.6 us a call
    measured, 3.25 us unprofiled, with the profiler's 13.2 us per timed call charged against
    it: its ~30% of the plain step read 4%). 0.0 while a profiler runs and nothing was
    calibrated yet.

    Example:
        >>> 0.0 <= in_clock_cost_us() < 1e4
        True
    """
    if "in_clock" not in _cost_us:
        kept = recall("line_in_clock")
        if isinstance(kept, float):
            _cost_us["in_clock"] = kept
        elif STATE.profiler is not None:
            return 0.0
        else:
            _cost_us["in_clock"] = _measure_in_clock()
            remember("line_in_clock", _cost_us["in_clock"])
    return _cost_us["in_clock"]


def _measure_in_clock() -> float:
    """The events' clocked ns per call under a collector less the plain loop's per call,
    fastest round of each."""
    from torchdoctor.collect.lines_table import EVENT_FIELDS

    loop = _user_loop("single")
    x = torch.zeros(4)
    plain: list[int] = []
    clocked: list[int] = []
    loop(x, 10)
    for _ in range(_ROUNDS):
        start = time.perf_counter_ns()
        loop(x, _ITERATIONS)
        plain.append(time.perf_counter_ns() - start)
        with _scratch_collector() as collector:
            loop(x, _ITERATIONS)
            events = collector.events
            clocked.append(sum(events[i + 7] - events[i + 6]
                               for i in range(0, len(events), EVENT_FIELDS)))  # fmt: skip
    return max(0.0, (min(clocked) - min(plain)) / 1e3 / _ITERATIONS)


def _python_level_dispatch_us() -> float:
    """The dispatch of a Python-level torch function to an inactive collector: ``F.layer_norm``
    and ``F.dropout``, as a model's forward calls them (several arguments each; the cost grows
    with them); ``x.shape`` is a plain attribute read, no torch call."""
    loop = _user_loop("python_level")
    x = torch.zeros(4)
    plain, seen = [], []
    loop(x, 10)
    for _ in range(_ROUNDS):
        start = time.thread_time_ns()
        loop(x, _ITERATIONS)
        plain.append(time.thread_time_ns() - start)
        with _scratch_collector(active=False, stepped=False):
            start = time.thread_time_ns()
            loop(x, _ITERATIONS)
            seen.append(time.thread_time_ns() - start)
    return max(0.0, (min(seen) - min(plain)) / 1e3 / (2 * _ITERATIONS))

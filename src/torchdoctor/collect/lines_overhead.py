"""What the hot-lines collector costs per torch call it times (for the session's own estimate).

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

import torch

from torchdoctor.collect.clocks import CpuClock
from torchdoctor.collect.state import STATE

_ROUNDS = 5
_ITERATIONS = 200
_SOURCE = "def loop(x, n):\n    for _ in range(n):\n        x = x * 1.0 + 0.0\n    return x\n"
_cost_us: list[float] = []


def _user_loop():
    namespace: dict = {}
    exec(compile(_SOURCE, "/torchdoctor-calibration/user_loop.py", "exec"), namespace)
    return namespace["loop"]


def line_call_cost_us() -> float:
    """Microseconds the hot-lines collector adds to each torch call it times (0.0 while a
    profiler runs and nothing was calibrated yet).

    Example:
        >>> 0.0 <= line_call_cost_us() < 1e4
        True
    """
    if _cost_us:
        return _cost_us[0]
    if STATE.profiler is not None:
        return 0.0
    from torchdoctor.collect.lines import LineCollector
    from torchdoctor.collect.recorder import Recorder

    loop = _user_loop()
    x = torch.zeros(4)
    plain, timed = [], []
    loop(x, 10)
    for _ in range(_ROUNDS):
        start = time.thread_time_ns()
        loop(x, _ITERATIONS)
        plain.append(time.thread_time_ns() - start)
        rec = Recorder(CpuClock(), backward=False, memory=False)
        rec.new_step(rec.now())
        collector = LineCollector(rec)
        collector.start()
        try:
            start = time.thread_time_ns()
            loop(x, _ITERATIONS)
            timed.append(time.thread_time_ns() - start)
            collector.end_step()
        finally:
            collector.stop()
            rec.release_handles()
    calls = 2 * _ITERATIONS  # a multiply and an add per iteration
    _cost_us.append(max(0.0, (min(timed) - min(plain)) / 1e3 / calls))
    return _cost_us[0]

"""Estimate the profiler's own cost in a run: module calls per step x calibrated cost per call.

Every module call runs the profiler's forward hooks (and, with backward attribution, its graph
hooks): a few microseconds each, negligible beside a large layer, a multiple of a tiny one. A
model of many small modules therefore looks slower under the profiler than it is, and the
parents' ``(self)`` rows absorb that cost. The cost of one call is measured once per process
(a tiny ``Linear`` called with and without a fresh profiler, alternating, fastest round of
each), with and without a backward pass; the estimate is ``calls x cost``, relative to the step
time minus itself. Like the sync audit's estimate it is rough (it tells "negligible" from
"dominant"); ``torchdoctor bench profiler`` measures the real overhead on whole steps.

Example:
    >>> estimate_profiler_overhead(0, 10.0, backward=False)["overhead_ms"]
    0.0
"""

from __future__ import annotations

import time
from typing import Any

import torch

from torchdoctor.collect.state import STATE

__all__ = ["estimate_profiler_overhead", "per_module_call_cost_us"]

_cost_us: dict[bool, float] = {}
_calibrating: list[bool] = []  # non-empty while a calibration profiler runs (no nesting)
_CALLS = 200
_ROUNDS = 5


def _loop(layer: torch.nn.Module, x: torch.Tensor, backward: bool) -> int:
    start = time.perf_counter_ns()
    for _ in range(_CALLS):
        y = layer(x)
        if backward:
            y.sum().backward()
    return time.perf_counter_ns() - start


def per_module_call_cost_us(backward: bool) -> float:
    """Microseconds the profiler adds to one module call (with its backward, if ``backward``).

    Measured once per process for each case; other processes only ever add time, so the
    fastest round of each side is compared.
    """
    cached = _cost_us.get(backward)
    if cached is not None:
        return cached
    from torchdoctor.collect.profiler import Profiler

    layer = torch.nn.Linear(4, 4)
    x = torch.zeros(2, 4)
    plain, profiled = [], []
    _calibrating.append(True)
    try:
        with torch.enable_grad():
            for _ in range(_ROUNDS):
                plain.append(_loop(layer, x, backward))
                with Profiler(syncs=False, memory=False, backward=backward):
                    profiled.append(_loop(layer, x, backward))
    finally:
        _calibrating.pop()
    cost = max(0.0, (min(profiled) - min(plain)) / 1e3 / _CALLS)
    _cost_us[backward] = cost
    return cost


def estimate_profiler_overhead(
    calls_per_step: float, step_ms: float, *, backward: bool
) -> dict[str, Any]:
    """``{"overhead_ms", "overhead_pct", "calls_per_step", "cost_us"}`` per profiled step."""
    # A checkpoint built while a profiler runs (collect/checkpoint.py) cannot calibrate (it
    # would nest profilers): without a cost measured earlier, the estimate waits for the end.
    uncalibrated = backward not in _cost_us and STATE.profiler is not None
    if calls_per_step <= 0 or step_ms <= 0 or _calibrating or uncalibrated:
        return {"overhead_ms": 0.0, "overhead_pct": 0.0, "calls_per_step": calls_per_step,
                "cost_us": None}  # fmt: skip
    cost = per_module_call_cost_us(backward)
    overhead = min(calls_per_step * cost / 1e3, 0.95 * step_ms)  # noise can not exceed the step
    base = step_ms - overhead
    return {
        "overhead_ms": overhead,
        "overhead_pct": 100.0 * overhead / base if base > 0 else None,
        "calls_per_step": calls_per_step,
        "cost_us": cost,
    }

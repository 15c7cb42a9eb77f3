"""Estimate the profiler's own cost in a run, from calibrated per-call costs and exact timings.

What the profiler adds to a run, and how each part is known:

- module hooks in a detailed step: ``calls x detail cost per call``; in a light step:
  ``calls x light cost per call``. Both per-call costs are calibrated once per process: a tiny
  model (two ``Linear`` around a ``Tanh``) runs forward and backward with the profiler's own
  hook functions installed on a scratch recorder, and without, alternating; the fastest round
  of each side is compared, in the thread's CPU time (other processes only ever add time);
- the sync audit (detailed steps only: it is paused in light steps): its intercepted calls x
  its calibrated cost per call (``collect/syncs_overhead.py``);
- closing each step (resolving clock tokens, summarizing): timed exactly on every step. It
  runs between one step's end and the next one's start, so it is already outside every step
  time (subtracted exactly); it still costs the run wall time.

The hooks' cost cannot be subtracted from the figures exactly: it lands inside the modules'
forward and backward times and their parents' ``(self)`` rows. The estimate says how large it is
(``overhead_pct``: of a detailed step; ``run_overhead_pct``: of the whole run).

Example:
    >>> estimate_profiler_overhead(0, 10.0, backward=False)["overhead_ms"]
    0.0
"""

from __future__ import annotations

import time
from typing import Any

import torch

from torchdoctor.collect.clocks import CpuClock
from torchdoctor.collect.install import Installation
from torchdoctor.collect.recorder import Recorder
from torchdoctor.collect.state import STATE

__all__ = ["estimate_profiler_overhead", "per_module_call_cost_us"]

_cost_us: dict[tuple[bool, bool], float] = {}
_ITERATIONS = 40
_ROUNDS = 7
_CALLS_PER_ITERATION = 4  # Sequential + Linear + Tanh + Linear


def _loop(model: torch.nn.Module, x: torch.Tensor, backward: bool, rec: Any = None) -> int:
    start = time.thread_time_ns()  # CPU time: other processes on the machine do not count
    for _ in range(_ITERATIONS):
        y = model(x)
        if backward:
            y.sum().backward()
    elapsed = time.thread_time_ns() - start
    if rec is not None:  # its buffers are not part of the cost: reset outside the timing
        rec.release_handles()
        rec.new_step(rec.now())
    return elapsed


def per_module_call_cost_us(backward: bool, detailed: bool = True) -> float:
    """Microseconds the profiler's module hooks add to one module call (with its backward, if
    ``backward``) in a detailed or a light step.

    Measured once per process for each case (see the module docstring).

    Example:
        >>> per_module_call_cost_us(backward=False, detailed=False) >= 0.0
        True
    """
    cached = _cost_us.get((backward, detailed))
    if cached is not None:
        return cached
    if STATE.profiler is not None:  # never install a second set of global hooks
        return 0.0
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8))
    x = torch.randn(4, 8)
    rec = Recorder(CpuClock(), backward=backward, memory=False)
    rec.detailed = detailed
    saved_phase = STATE.phase
    plain, hooked = [], []
    with torch.enable_grad():
        _loop(model, x, backward)
        for _ in range(_ROUNDS):
            plain.append(_loop(model, x, backward))
            hooks = Installation()
            hooks.add_module_hooks(rec.pre_hook, rec.post_hook)
            try:
                hooked.append(_loop(model, x, backward, rec))
            finally:
                hooks.remove()
                rec.phases.reset()
                STATE.module_stack.clear()
                STATE.phase = saved_phase
    calls = _ITERATIONS * _CALLS_PER_ITERATION
    cost = max(0.0, (min(hooked) - min(plain)) / 1e3 / calls)
    _cost_us[(backward, detailed)] = cost
    return cost


def estimate_profiler_overhead(
    calls_per_step: float,
    step_ms: float,
    *,
    backward: bool,
    steps: int = 1,
    detailed_steps: int | None = None,
    audit_calls_per_step: float = 0.0,
    audit_cost_us: float = 0.0,
    bookkeeping_ms_per_step: float = 0.0,
) -> dict[str, Any]:
    """The profiler's estimated cost: per detailed step (``overhead_ms``, ``overhead_pct`` of
    the step without it) and over the whole run (``run_overhead_pct``), with its basis.

    ``step_ms``: the median step time; ``steps`` of which ``detailed_steps`` detailed (default
    all); ``audit_calls_per_step``: calls the sync audit intercepted per audited step.

    Example:
        >>> e = estimate_profiler_overhead(0, 10.0, backward=False, bookkeeping_ms_per_step=0.1)
        >>> e["run_overhead_pct"]
        1.0
    """
    detailed_steps = steps if detailed_steps is None else detailed_steps
    out: dict[str, Any] = {"overhead_ms": 0.0, "overhead_pct": 0.0, "run_overhead_pct": 0.0,
                           "calls_per_step": calls_per_step, "cost_us": None,
                           "light_cost_us": None,
                           "bookkeeping_ms_per_step": bookkeeping_ms_per_step}  # fmt: skip
    if step_ms <= 0:
        return out
    detail_cost = per_module_call_cost_us(backward, True) if calls_per_step > 0 else 0.0
    light_cost = (
        per_module_call_cost_us(backward, False) if calls_per_step > 0 and steps > detailed_steps
        else 0.0
    )  # fmt: skip
    detailed_ms = (calls_per_step * detail_cost + audit_calls_per_step * audit_cost_us) / 1e3
    detailed_ms = min(detailed_ms, 0.95 * step_ms)  # noise can not exceed the step
    light_ms = min(calls_per_step * light_cost / 1e3, 0.95 * step_ms)
    base = step_ms - detailed_ms
    total = detailed_steps * detailed_ms + (steps - detailed_steps) * light_ms
    total += steps * bookkeeping_ms_per_step
    plain = max(steps * step_ms - detailed_steps * detailed_ms - (steps - detailed_steps) * light_ms,
                1e-9)  # fmt: skip
    out.update(
        overhead_ms=detailed_ms,
        overhead_pct=100.0 * detailed_ms / base if base > 0 else None,
        run_overhead_pct=100.0 * total / plain,
        cost_us=detail_cost if calls_per_step > 0 else None,
        light_cost_us=light_cost if light_cost else None,
    )
    return out

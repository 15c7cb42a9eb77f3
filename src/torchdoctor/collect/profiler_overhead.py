"""Estimate the profiler's own cost in a run, from calibrated per-call costs and exact timings.

What the profiler adds to a run, and how each part is known:

- module hooks in a detailed step: the time measured inside the hook functions (two host
  clock readings per call, one of them the event's own token on CPU) plus ``calls x`` the
  calibrated cost of calling them (and of autograd calling the backward marks); light steps
  run without module hooks, except when steps are cut at module calls: ``calls x`` the
  calibrated light cost. The per-call costs are calibrated once per process: a tiny model (two
  ``Linear`` around a ``Tanh``) runs forward and backward with the profiler's own hook
  functions installed on a scratch recorder, and without, alternating; the fastest round of
  each side is compared, in the thread's CPU time (other processes only ever add time);
- the sync audit (detailed steps only: it is paused in light steps): its intercepted calls x
  its calibrated cost per call (``collect/syncs_overhead.py``);
- the hot-lines collector (detailed steps only): the time it measures in its own bookkeeping
  of each timed call (on the CPU clock; from the clock readings it takes anyway), plus the timed
  calls x the calibrated cost its clock does not see (the mode's dispatch, autograd running its
  backward hooks; on CUDA the whole calibrated cost per timed call), plus the calls its mode only saw (library modules' calls, the backward
  pass's entry, attribute reads) x the calibrated cost of the mode's dispatch
  (``collect/lines_overhead.py``);
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

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

from torchdoctor.collect.assemble import TREE_OUTLIER
from torchdoctor.collect.calibration_cache import recall, reference_model, remember
from torchdoctor.collect.clocks import CpuClock
from torchdoctor.collect.install import Installation
from torchdoctor.collect.recorder import Recorder
from torchdoctor.collect.schedule import FINGERPRINT_EVERY
from torchdoctor.collect.state import STATE

__all__ = ["estimate_profiler_overhead", "hook_cost_per_call_us", "measured_detail_ms",
           "per_module_call_cost_us"]

_cost_us: dict[tuple[bool, bool], dict[str, float]] = {}
_ITERATIONS = 40
_ROUNDS = 7
_CALLS_PER_ITERATION = 4  # Sequential + Linear + Tanh + Linear
#: the autograd hooks the calibration's module calls register (backward marks): one per
#: distinct ``grad_fn`` among the calls' outputs and inputs (Linear, Tanh, Linear; the
#: Sequential's output is the last Linear's): 3 per iteration of 4 calls
CALIBRATION_GRAPH_HOOKS_PER_CALL = 3 / _CALLS_PER_ITERATION


@contextlib.contextmanager
def autograd_on() -> Iterator[None]:
    """The calibrations build graphs and run their backward whatever the caller's grad mode: a
    profiler closed inside ``torch.no_grad()`` or ``torch.inference_mode()`` calibrates at its
    end, under that mode.

    Example:
        >>> with torch.inference_mode(), autograd_on():
        ...     torch.ones(1, requires_grad=True).sum().requires_grad
        True
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _loop(model: torch.nn.Module, x: torch.Tensor, backward: bool, rec: Any = None) -> int:
    start = time.thread_time_ns()  # CPU time: other processes on the machine do not count
    for _ in range(_ITERATIONS):
        y = model(x)
        if backward:
            y.sum().backward()
    return time.thread_time_ns() - start


@autograd_on()
def _calibrate(backward: bool, detailed: bool) -> tuple[float, float]:
    """``(total, outside)`` microseconds per module call: all the hooks add, and the part of
    it outside the hook functions' own measured time (calling them, autograd running them)."""
    if STATE.profiler is not None:  # never install a second set of global hooks
        return 0.0, 0.0
    model, x = reference_model()  # (the user's random state is left as it was)
    rec = Recorder(CpuClock(), backward=backward, memory=False)
    rec.detailed = detailed
    saved_phase = STATE.phase
    plain: list[int] = []
    # detailed steps that compare module inputs, and those that do (FINGERPRINT_EVERY - 1) not
    hooked: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
    _loop(model, x, backward)
    for _ in range(_ROUNDS):
        plain.append(_loop(model, x, backward))
        for fingerprinting, times in hooked.items():
            rec.fingerprinting = fingerprinting
            hooks = Installation()
            hooks.add_module_hooks(rec.pre_hook, rec.post_hook)
            rec.new_step(rec.now())
            try:
                times.append((_loop(model, x, backward), rec.hook_ns))
            finally:
                hooks.remove()
                rec.release_handles()
                rec.phases.reset()
                STATE.module_stack.clear()
                STATE.phase = saved_phase
    calls = _ITERATIONS * _CALLS_PER_ITERATION
    every = FINGERPRINT_EVERY
    (with_fp, inside_fp), (without, inside_no) = min(hooked[True]), min(hooked[False])
    fastest = (with_fp + (every - 1) * without) / every  # a detailed step on average
    inside = (inside_fp + (every - 1) * inside_no) / every
    total = max(0.0, (fastest - min(plain)) / 1e3 / calls)
    return total, max(0.0, total - inside / 1e3 / calls)


def per_module_call_cost_us(backward: bool, detailed: bool = True, part: str = "total") -> float:
    """Microseconds the profiler's module hooks add to one module call (with its backward, if
    ``backward``) in a detailed or a light step; ``part="outside"``: the share not measured
    inside the hook functions (calling them; autograd calling the backward marks).

    Calibrated once per process for each case (see the module docstring).

    Example:
        >>> per_module_call_cost_us(backward=False, detailed=False) >= 0.0
        True
    """
    key = (backward, detailed)
    if key not in _cost_us:
        name = f"backward={backward},detailed={detailed}"
        kept = recall("module_hooks") or {}  # (another run's, on this machine: calibration_cache)
        if isinstance(kept.get(name), dict) and {"total", "outside"} <= kept[name].keys():
            _cost_us[key] = kept[name]
            return _cost_us[key][part]
        total, outside = _calibrate(backward, detailed)
        if total == 0.0 and STATE.profiler is not None:
            return 0.0  # not calibrated (a profiler is running): try again later
        _cost_us[key] = {"total": total, "outside": outside}
        remember("module_hooks", {**kept, name: _cost_us[key]})
    return _cost_us[key][part]


def hook_cost_per_call_us(backward: bool, part: str = "total",
                          graph_hooks_per_call: float | None = None) -> float:
    """The calibrated cost of the module hooks per call in a detailed step (``part`` as for
    :func:`per_module_call_cost_us`), for calls that register ``graph_hooks_per_call``
    autograd hooks (backward marks) each. With backward, the marks' share (the backward
    calibration over the forward-only one) grows with them: an ``LSTMCell`` takes ``(h, c)``
    and returns two tensors, 1.7 hooks per call in a time-series model against the
    calibration's 0.75, and cost 66 us per call where the calibrated cost said 54.

    Example:
        >>> plain = hook_cost_per_call_us(True)
        >>> same = hook_cost_per_call_us(True, graph_hooks_per_call=CALIBRATION_GRAPH_HOOKS_PER_CALL)
        >>> abs(same - plain) < 1e-9
        True
        >>> hook_cost_per_call_us(True, graph_hooks_per_call=0.0) <= plain
        True
    """
    cost = per_module_call_cost_us(backward, True, part)
    if not backward or graph_hooks_per_call is None:
        return cost
    forward_only = per_module_call_cost_us(False, True, part)
    marks = max(0.0, cost - forward_only)
    return min(cost, forward_only) + marks * graph_hooks_per_call / CALIBRATION_GRAPH_HOOKS_PER_CALL


#: detailed and light steps each needed to measure what detail costs
MIN_SIDE = 5


#: detailed steps above this multiple of the median detailed step are the loop's own outliers
#: (as the tree has them)
OUTLIER = TREE_OUTLIER
#: a measured detail cost over NOISY_RATIO x the calibrated parts' sum that is also within the
#: light steps' own spread (q1-q3) is the run's noise (a busy machine, warm-up steps, epochs of
#: other work), not the profiler's: the calibrated sum stands then (a VAE on a shared machine
#: measured 34.5 ms against 3.9 ms calibrated, with light steps of 15-470 ms)
NOISY_RATIO = 3.0
#: a single window's measured detail cost (an upper bound: its steps sit in the script's own
#: warm-up) replaces a larger calibrated sum from this share of it; under it, light steps
#: differ from the window's for another reason (a sequence growing step by step)
BOUND_FLOOR = 0.3


def measured_detail_ms(steps: list[tuple[bool, float]], first_window: int = 0) -> float | None:
    """What a detailed step costs over a light one, from the run's own steps ``(detailed,
    wall ms)`` in order: the mean detailed step (detailed steps differ on purpose: one of 4
    compares module inputs, one hooks the lines' backward; a median would pick the cheap kind)
    minus the median light step time (many, and alike), leaving out the first
    ``first_window`` detailed steps (right after warm-up: lazy initialization, the allocator
    settling, a first evaluation in the same step) and those over OUTLIER x the median
    detailed step (the loop's own periodic work in a window). None with fewer than MIN_SIDE detailed
    steps after those or MIN_SIDE light ones (short runs; ``detail="always"`` has light
    control steps from step 16, 5 of them by step 56): the calibrated sum is used then.

    Example:
        >>> steps = [(True, 12.0)] * 5 + [(False, 10.0)] * 90 + [(True, 11.0)] * 5
        >>> measured_detail_ms(steps, first_window=5)
        1.0
        >>> measured_detail_ms([(True, 12.0)] * 10) is None  # no light step
        True
        >>> measured_detail_ms(steps[:95], first_window=5) is None  # only the first window
        True
        >>> with_eval = steps[:95] + [(True, 11.0)] * 4 + [(True, 60.0)]  # an evaluation step
        >>> measured_detail_ms(with_eval, first_window=5)
        1.0
    """
    detailed = [ms for is_detailed, ms in steps if is_detailed][first_window:]
    light = sorted(ms for is_detailed, ms in steps if not is_detailed)
    if len(detailed) < MIN_SIDE or len(light) < MIN_SIDE:
        return None
    detailed.sort()
    detailed = detailed[: len(detailed) - len(detailed) // 20]  # long runs: the top 5% (GC) out
    # a detailed step over OUTLIER x the median detailed one did the loop's own periodic work
    # (an evaluation, a checkpoint), not the profiler's: out (they made a tiny model's "detail
    # cost" 16x its step)
    median = detailed[len(detailed) // 2]
    detailed = [ms for ms in detailed if ms <= OUTLIER * median]
    return sum(detailed) / len(detailed) - light[len(light) // 2]


def estimate_profiler_overhead(
    calls_per_step: float,
    step_ms: float,
    *,
    backward: bool,
    steps: int = 1,
    detailed_steps: int | None = None,
    hook_ms_per_step: float | None = None,
    audit_calls_per_step: float = 0.0,
    audit_cost_us: float = 0.0,
    line_calls_per_step: float = 0.0,
    line_cost_us: float = 0.0,
    line_ms_per_step: float = 0.0,
    line_seen_per_step: float = 0.0,
    line_seen_cost_us: float = 0.0,
    measured_detail_ms: float | None = None,
    audit_in_light: bool = False,
    detailed_step_ms: float | None = None,
    bookkeeping_ms_per_step: float = 0.0,
    light_calls_per_step: float = 0.0,
    registration_ms: float = 0.0,
    first_step_ms: float = 0.0,
    event_ms: float = 0.0,
    light_spread_ms: float | None = None,
    mean_step_ms: float | None = None,
    window_bound_ms: float | None = None,
    graph_hooks_per_call: float | None = None,
) -> dict[str, Any]:
    """The profiler's estimated cost: per detailed step (``overhead_ms``, ``overhead_pct`` of
    the step without it) and over the whole run (``run_overhead_ms``, ``run_overhead_pct``),
    with ``cost_us`` (per module call in a detailed step) and ``light_cost_us``.

    ``step_ms``: the median step time; ``steps`` of which ``detailed_steps`` detailed (default
    all); ``hook_ms_per_step``: the time measured inside the hooks per detailed step (None:
    the calibrated total cost per call is used instead); ``audit_calls_per_step``: calls the
    sync audit intercepted per audited step, at ``audit_cost_us`` each; ``line_calls_per_step``:
    torch calls the hot-lines collector timed per detailed step, at ``line_cost_us`` each;
    ``line_ms_per_step``: the collector's own time measured inside it per step it ran in
    (``line_cost_us`` is then the part it does not see); ``line_seen_per_step``: the other
    calls its mode saw (dispatched, not timed), at ``line_seen_cost_us`` each;
    ``measured_detail_ms``: what a detailed step costs over a light one, measured by the run
    (:func:`measured_detail_ms`; it then replaces the calibrated sum, which stays in
    ``calibrated_overhead_ms``); ``audit_in_light``: the sync audit runs in light steps too
    (``detail="always"``, whose light steps are its control steps): the measured difference
    then leaves it out, and its calibrated part is added to both kinds of step;
    ``detailed_step_ms``: the median detailed step, the base of
    ``overhead_pct`` (default ``step_ms``); ``light_calls_per_step``:
    the module calls light steps hook (steps cut at module calls: the outermost ones, or all);
    ``registration_ms``: measured once-only work inside steps (registering each module at its
    first call: its name, class source and parameters), added to the run when the calibrated
    sum stands (a measured detail cost has it in its first detailed step); ``event_ms``: the
    time measured in the phase and step event handlers over the run (optimizer, backward,
    ``no_grad`` and DataLoader events: every step pays them, light ones included, so the
    measured difference of detailed and light steps does not hold them); ``first_step_ms``:
    when the measured detail cost leaves the first detailed step out (no warm-up step: it is
    the script's first step), what the hooks and the hot-lines collector measured in that step
    over a later detailed step (registering modules, classifying code at first sight), added
    to the run when the measured cost stands; ``light_spread_ms``: the light steps'
    interquartile range (a measured cost within it and over NOISY_RATIO x the calibrated sum
    is discarded as noise: ``measured_discarded_ms`` keeps it); ``mean_step_ms``: the mean
    step, so ``steps`` x it is the steps' whole wall time, the base of ``run_overhead_pct``
    (default ``step_ms``: a median under the detailed steps' time when they are slow);
    ``window_bound_ms``: a run of one detail window's measured detail cost, which its steps'
    warm-up can only inflate: it replaces a larger calibrated sum when at least
    :data:`BOUND_FLOOR` of it (``source`` "window bound"; ultralytics' predictor: 20.4 ms
    against 37.8 ms calibrated); ``graph_hooks_per_call``: the autograd hooks (backward marks)
    the run's module calls registered, per call (:func:`hook_cost_per_call_us`; None: as many
    as the calibration's).

    Example:
        >>> e = estimate_profiler_overhead(0, 10.0, backward=False, bookkeeping_ms_per_step=0.1)
        >>> e["run_overhead_pct"]
        1.0
        >>> e = estimate_profiler_overhead(0, 40.0, backward=False, audit_calls_per_step=2000,
        ...                                audit_cost_us=10.0, window_bound_ms=12.0)
        >>> e["source"], e["overhead_ms"], e["calibrated_overhead_ms"]
        ('window bound', 12.0, 20.0)
    """
    detailed_steps = steps if detailed_steps is None else detailed_steps
    out: dict[str, Any] = {"overhead_ms": 0.0, "overhead_pct": 0.0, "run_overhead_ms": 0.0,
                           "run_overhead_pct": 0.0, "calls_per_step": calls_per_step,
                           "cost_us": None, "light_cost_us": None,
                           "bookkeeping_ms_per_step": bookkeeping_ms_per_step,
                           "registration_ms": registration_ms,
                           "first_step_ms": first_step_ms,
                           "event_ms": event_ms,
                           "audit_calls_per_step": audit_calls_per_step,
                           "line_calls_per_step": line_calls_per_step,
                           "graph_hooks_per_call": graph_hooks_per_call}  # fmt: skip
    if step_ms <= 0:
        return out
    hooks_ms = 0.0
    if calls_per_step > 0:
        part = "total" if hook_ms_per_step is None else "outside"
        per_call = hook_cost_per_call_us(backward, part, graph_hooks_per_call)
        hooks_ms = (hook_ms_per_step or 0.0) + calls_per_step * per_call / 1e3
    light_cost = 0.0
    if light_calls_per_step > 0 and steps > detailed_steps:
        light_cost = per_module_call_cost_us(backward, False)
    audit_ms = audit_calls_per_step * audit_cost_us / 1e3
    detailed_ms = hooks_ms + audit_ms
    detailed_ms += line_calls_per_step * line_cost_us / 1e3  # the hot-lines collector
    detailed_ms += line_ms_per_step + line_seen_per_step * line_seen_cost_us / 1e3
    cap = 0.95 * (detailed_step_ms or step_ms)  # noise can not exceed the (detailed) step
    detailed_ms = min(detailed_ms, cap)
    out["calibrated_overhead_ms"] = detailed_ms
    out["source"] = "calibrated"
    noisy = (
        measured_detail_ms is not None
        and light_spread_ms is not None
        and measured_detail_ms > NOISY_RATIO * detailed_ms
        and measured_detail_ms <= light_spread_ms
    )
    if noisy:
        out["measured_discarded_ms"] = measured_detail_ms
        out["light_spread_ms"] = light_spread_ms
    elif measured_detail_ms is not None and measured_detail_ms > 0:
        detailed_ms = min(measured_detail_ms + (audit_ms if audit_in_light else 0.0), cap)
        out["source"] = "measured"
    elif window_bound_ms is not None and BOUND_FLOOR * detailed_ms <= window_bound_ms < detailed_ms:
        detailed_ms = window_bound_ms
        out["source"] = "window bound"
    light_ms = light_calls_per_step * light_cost / 1e3 + (audit_ms if audit_in_light else 0.0)
    light_ms = min(light_ms, 0.95 * step_ms)
    light_steps = steps - detailed_steps
    in_steps = detailed_steps * detailed_ms + light_steps * light_ms
    if out["source"] != "measured":  # (measured: inside the first detailed step's time)
        in_steps += registration_ms
    else:  # ... unless that step was left out of the measured cost
        in_steps += first_step_ms
    in_steps += event_ms
    total = in_steps + steps * bookkeeping_ms_per_step
    plain = max(steps * max(mean_step_ms or 0.0, step_ms) - in_steps, 1e-9)
    out.update(
        overhead_ms=detailed_ms,
        run_overhead_ms=total,
        overhead_pct=100.0 * detailed_ms / max(1e-9, (detailed_step_ms or step_ms) - detailed_ms),
        run_overhead_pct=100.0 * total / plain,
        cost_us=1e3 * hooks_ms / calls_per_step if calls_per_step > 0 else None,
        light_cost_us=light_cost or None,
    )
    return out

"""The profiler's step cycle: begin a step, cut it (summarize, store), the final cut.

A mixin of :class:`~torchdoctor.collect.profiler.Profiler` (its state is the profiler's): the
schedule decides at each boundary whether the next step is detailed (module hooks, hot lines,
sync audit, fingerprints) or light; at its end a step's raw records are detached and wait,
summarized in batches (``collect/step_queue.py``).

Example:
    >>> import torch, torchdoctor
    >>> net = torch.nn.Linear(2, 2)
    >>> with torchdoctor.Profiler(net, syncs=False, window=1, period_steps=100) as prof:
    ...     for _ in range(4):
    ...         net(torch.ones(1, 2)).sum().backward()
    ...         prof.step()
    ...     recorded = prof.steps_recorded  # kept or waiting to be summarized
    >>> recorded, [s["detailed"] for s in prof.session["steps"]]
    (4, [True, False, False, False])
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from torchdoctor.collect.aggregate import summarize_step
from torchdoctor.collect.call_lines import step_call_counts, step_call_lines
from torchdoctor.collect.compiled import compile_seconds
from torchdoctor.collect.device_clock import adopt_cuda_clock
from torchdoctor.collect.profiler_state import StepBoundary
from torchdoctor.collect.records import resolve_records
from torchdoctor.collect.script_options import note_running_options
from torchdoctor.collect.sigint import interrupt_pending
from torchdoctor.collect.state import STATE
from torchdoctor.collect.syncs_fold import drop_profiled_steps

_KEEP_TIMELINES = 32
_MARKER, _MODULE = StepBoundary.MARKER, StepBoundary.MODULE


class RecentSteps:
    """The host time of the last steps, for the detail budget: a detailed step's hot lines
    stop once it runs BUDGET x the median recent step (at least MIN_BUDGET_NS). An evaluation
    or a checkpoint inside a detailed step would otherwise run every torch call through the
    line timing (minGPT's evaluation in its step callback: 4x slower); such a step is left
    out of the tree and the lines anyway (``collect/assemble.py`` ``typical_steps``).

    Example:
        >>> recent = RecentSteps()
        >>> recent.budget_ns() > 10**15  # nothing measured yet: no budget
        True
        >>> for end in (1_000_000, 2_000_000, 3_000_000):  # steps of 1 ms
        ...     recent.add(end); recent.began_ns = end
        >>> recent.budget_ns() / 1e6  # 10 x 1 ms, but at least 50 ms
        50.0
        >>> recent.add(13_000_000); recent.began_ns = 13_000_000  # one of 10 ms
        >>> recent.add(23_000_000)  # and another: the median is 10 ms
        >>> recent.budget_ns() / 1e6
        100.0
    """

    # past it, the step is one the tree leaves out anyway (over TREE_OUTLIER x the median
    # detailed step; the recent steps are mostly light ones, which the hot lines do not slow)
    BUDGET = 10.0
    MIN_BUDGET_NS = 50_000_000

    def __init__(self) -> None:
        self.began_ns = 0
        self._walls: deque[int] = deque(maxlen=33)

    def add(self, ended_ns: int) -> None:
        if self.began_ns:
            self._walls.append(ended_ns - self.began_ns)

    def forget(self) -> None:
        """Drop the steps measured so far (the step boundary changed: they were module calls,
        an evaluation's forwards before the first optimizer step, whose length made every
        training step's hot lines run past a budget of 10 of them: llm.c, nanoGPT).

        Example:
            >>> recent = RecentSteps(); recent.began_ns = 1; recent.add(2_000_001)
            >>> recent.forget(); recent.budget_ns() > 10**15
            True
        """
        self._walls.clear()

    def budget_ns(self) -> int:
        if not self._walls:
            return 1 << 62
        walls = sorted(self._walls)
        return max(int(self.BUDGET * walls[len(walls) // 2]), self.MIN_BUDGET_NS)


class StepCycle:
    """Begin and cut steps (mixed into the Profiler, whose attributes it uses).

    Example:
        >>> from torchdoctor.collect.profiler import Profiler
        >>> issubclass(Profiler, StepCycle)
        True
    """

    @property
    def steps_recorded(self) -> int:
        """Steps profiled so far (after warm-up), light ones waiting to be summarized included."""
        return self.state.summaries.count + len(self._queue)

    def flush_steps(self) -> None:
        """Summarize the steps still waiting (``collect/step_queue.py``) into the step store
        now, at a step boundary: what reads ``state.summaries`` while the profiler runs (the
        live view, a benchmark timing the steps' processing) calls it first; snapshots and the
        end of the run do it themselves.

        Example:
            >>> import torch, torchdoctor
            >>> net = torch.nn.Linear(2, 2)
            >>> with torchdoctor.Profiler(net, syncs=False) as prof:
            ...     net(torch.ones(1, 2)).sum().backward()
            ...     prof.step()
            ...     prof.flush_steps()
            ...     kept = prof.state.summaries.count
            >>> kept, prof.steps_recorded
            (1, 1)
        """
        if len(self._queue):
            began = time.perf_counter_ns()
            self._queue.flush(self._clock, self.state.summaries)
            self.state.bookkeeping_ns += time.perf_counter_ns() - began

    def _begin_step(self) -> None:
        if self._watch_cuda and torch.cuda.is_initialized():  # `run`: the script uses CUDA now
            self.flush_steps()  # waiting steps hold the host clock's tokens: resolve them first
            if adopt_cuda_clock(self):
                self._watch_cuda = False
        rec, state = self._rec, self.state
        rec.forget_freed()  # (modules freed in the last step: their state let go, ids free)
        profiled = self._counter - self.warmup
        detailed = self._detailed = rec.detailed = self._schedule.detailed(
            profiled, time.monotonic(), self.steps_recorded
        ) and not interrupt_pending()  # (a Ctrl-C waits: collect/sigint.py)
        if detailed:  # (`run`: a Hydra job's or click command's options, read while it runs)
            note_running_options()
        # Light steps run without module hooks (their mere presence costs every module call),
        # unless a call is open (a marker inside a forward) or compiled code runs (Dynamo
        # guards on the hooks and modes: collect/compiled.py); cut at module calls, they hook
        # the outermost modules alone (collect/outermost.py); else they count their calls
        compiled, hooks = self._compiled_now(), self._module_hooks
        if detailed or state.boundary is None or rec.module_depth or compiled:
            hooks.on()
        elif state.boundary is _MODULE:
            outermost = self._outer_modules.for_light_steps(rec.node_ids, rec.kind)
            hooks.narrow(outermost) if outermost else hooks.on()
            state.light_hooks_outermost = bool(outermost)
        else:  # (the outermost model calls counted: an evaluation between steps makes many)
            counted = self._outer_modules.for_counting(rec.node_ids, rec.kind)
            if counted:  # (one also inside another: counted with none of theirs open)
                hooks.count(counted[0], self._count_outer, nested=counted[1])
            else:
                hooks.off()
        lines = self._lines
        began = time.perf_counter_ns()
        rec.owner_shadow = False
        # hot lines: in some detailed steps (schedule.LINES_EVERY; with compiled code, in all)
        timing = self._timing_lines = detailed and (
            compiled or self._schedule.times_lines(profiled)
        )
        if lines is not None and detailed and not timing and not lines.placed():
            lines.start()  # (stopped in a light step: back in its place below the audits,
            lines.pause()  # parked for this step, as the steps after a timing one have it)
        if lines is not None and timing:
            lines.start()  # before the audits resume: below their modes (their cost is no line's)
            lines.deadline_ns = began + self._recent.budget_ns()
            if profiled == 0:  # (the first kept step measures the lines' backward)
                lines.measure_backward_now()
        audited = True
        audit_all = self._schedule.audits_every_step  # detail="always": its control steps too
        for audit in self._paced:
            if detailed or audit_all:
                audit.resume()
            elif audit.pause(in_place=compiled):  # (compiled code: the mode stack stays)
                audited = False
        self._audited = audited
        if lines is not None and not timing:  # light steps: no line timing (after the audits
            # paused: modes in order; under an audit that runs on, in detailed steps too, in
            # its place; with compiled code, the same mode object, parked: Dynamo guards on the
            # mode stack)
            if audit_all or compiled or detailed:
                lines.pause(shadow=compiled)
                rec.owner_shadow = compiled
            else:
                lines.stop()
        # never inside a backward pass: a checkpoint's recomputation pushes its own saved-tensor
        # hooks, which must stay on top
        rec.count_memory = (
            self.memory and profiled >= 0 and detailed and not self._memory_counted
            and rec.phases.phase != "backward"
        )  # fmt: skip
        if rec.count_memory:  # only the counting step pays for saved-tensor hooks; inside a
            # torch.func transform (its autograd.grad ends a step) torch refuses them
            rec.count_memory = self._saved.on()
        self._meter.begin(light=not detailed)
        rec.fingerprints_across_steps = state.boundary is _MODULE
        inputs = self._schedule.compares_inputs(profiled, detailed)  # (recomputation)
        rec.fingerprinting = rec.fingerprints_across_steps or inputs  # inference: every step
        rec.new_step(rec.now(), light=not detailed)
        self._chains = []  # (each outermost call's user lines and batch, in detailed steps)
        if self._other is not None and self._other.enabled:  # (its ticks: with the lines')
            self._other.step_began(detailed, rec.phases.phase, timing)
        STATE.step_index = self._counter
        self._recent.began_ns = began
        if state.first_kept_ns is None and self._counter >= self.warmup:  # (run_time's split)
            state.first_kept_ns = began
        self._host_began = self._host.read() if self._host is not None else None

    def _drop_steps(self) -> None:
        """The steps kept so far were partial: forget them and their syncs, number steps anew;
        the next opens a window. Waiting steps are summarized first: their line tables carry
        each line's backward per call to the next steps (their hooked sites are not again)."""
        self.state.first_kept_ns = self._recent.began_ns or None  # (the running step: first)
        self.flush_steps()
        kept = self.state.summaries  # (what is dropped: its steps and their time)
        self.state.dropped_steps += kept.count
        self.state.dropped_ms += kept.wall.total
        self.state.drop_steps()
        self._schedule.restart()
        if self._counter > self.warmup:  # the running step is the first kept one
            drop_profiled_steps(self._paced, running=self._counter, number=self.warmup)
            self._counter = STATE.step_index = self.warmup  # (audits number steps with it)

    def _cut(self, discard: bool = False) -> None:
        rec, state = self._rec, self.state
        if not rec.recording:
            return
        end_token = rec.now()
        host = self._host.since(self._host_began) if self._host is not None else {}
        began = time.perf_counter_ns()
        if self._update_ns:  # (the optimizers' own updates, after any closure: hook_events)
            host = {**host, "update_ms": self._update_ns / 1e6}
            if self._closure_ran:  # (optimizer.step(closure): the phase holds the closure too)
                host["closure"] = True
            self._update_ns = 0
        if self._step_optimizer:  # (its class: a run that changes optimizer, Adam then LBFGS)
            host = {**host, "optimizer": self._step_optimizer}
        self._closure_ran, self._step_optimizer = False, ""
        calls = self._outer_calls  # (this step's outermost calls become the last step's)
        if calls[0] and not discard:  # (the step's record says how many: an evaluation's
            host = {**host, "model_calls": calls[0], "eval_calls": calls[2]}  # many, in eval)
        calls[0], calls[1], calls[2], calls[3] = 0, (calls[1] if discard else calls[0]), 0, 0
        peak = self._meter.end()
        kept = not discard and self._counter >= self.warmup
        if not kept and not discard and self._recent.began_ns:  # (a warm-up step: its time)
            state.warmup_ms += (began - self._recent.began_ns) / 1e6
        if kept and self._recent.began_ns:  # (light steps' own times aim a detail at long
            took = began - self._recent.began_ns  # ones: a busy host's stalls are none)
            waited = min(took, int(1e6 * float(host.get("cpu_wait_ms") or 0.0)))
            self._schedule.observe(self._counter - self.warmup, took - waited, self._detailed)
        if kept and state.boundary is _MODULE:
            state.note_input_shape(self._counter - self.warmup, rec.outer_shape)
            name_of = self._module_round.name_of
            state.note_step_modules(self._counter - self.warmup,
                                    {name_of(m) for m in self._step_outer})  # fmt: skip
        rec.outer_shape = None
        self._step_outer.clear()  # (the same set: no new object per step)
        if not discard:  # (a partial step, dropped: no step's length)
            self._recent.add(began)
        queue, due = self._queue, False
        calls = sum(audit.function_calls for audit in self._paced)  # the audits' calls, and
        audit_calls, self._audit_calls = max(0, calls - self._audit_calls), calls  # this step's
        if not self._detailed:  # light: its tokens wait, summarized in a batch
            if kept:
                due = queue.add_light(rec.step_start, end_token, rec.phases.segments, peak,
                                      self._audited, host)  # fmt: skip
        else:
            graph_hooks = len(rec.registered)  # (the step's backward-mark hooks)
            raw = rec.take_step(end_token)
            padding = rec.padding.take()  # (the step's first padded token batch: padding.py)
            if padding is not None and kept:
                host = {**host, "padding": padding}
            if rec.unused and kept:  # (calls whose outputs reached no loss: unused_outputs.py)
                host = {**host, "unused_nodes": sorted(rec.unused)}
            passes = self._grad_passes.take_step()  # (autograd.grad passes by line)
            if passes and kept:
                host = {**host, "grad_passes": passes}
            timed = self._lines is not None and self._timing_lines
            lines = self._lines.take_step() if timed else None
            cut = timed and self._lines.step_cut
            other = self._other.take_step() if self._other is not None else (None, None)
            if kept:
                if rec.count_memory:
                    self._memory_counted = True
                state.hook_ns += rec.hook_ns
                state.hook_calls += len(raw[2])  # (the step's forward module calls)
                state.graph_hooks += graph_hooks
                state.count_lines(self._lines if timed else None)
                counts = state.step_counts(self._lines if timed else None, audit_calls)
                if state.first_detail_ns is None:
                    state.first_detail_ns = rec.hook_ns + (self._lines.step_own_ns if timed else 0)
                summarize = partial(
                    _summarize_detailed, state, self._clock, raw, lines, rec.parent,
                    rec.act if rec.count_memory else None, rec.identical, peak,
                    rec.fingerprinting, self._audited, other, cut,
                    (self._chains, rec.kind, rec.path), counts,
                )  # fmt: skip
                due = queue.add_detailed(summarize, host)
            elif lines is not None:  # a warm-up step's line backward still carries to the next
                queue.flush(self._clock, state.summaries)  # (tables in step order)
                lines()
        if due:  # (its time is this boundary's bookkeeping, measured below)
            queue.flush(self._clock, state.summaries)
        rec.release_handles()
        self._saved.off()
        compiled = compile_seconds()  # torch.compile compiling inside this step
        if compiled > self._compile_s:
            if kept:  # (the step's record, queued above: its index)
                state.note_compile(self.steps_recorded - 1, 1e3 * (compiled - self._compile_s))
            else:  # (compiling in the warm-up: the run's start-up, said in run_time)
                state.warmup_compile_ms += 1e3 * (compiled - self._compile_s)
            self._compile_s = compiled
        if not discard:
            self._counter += 1
        for listener in self._step_listeners:  # (each one catches its own errors)
            listener(self)
        if self.max_steps is not None and self.steps_recorded >= self.max_steps:
            rec.recording = False
            state.notes.append(f"stopped collecting after max_steps={self.max_steps} steps")
            state.bookkeeping_ns += time.perf_counter_ns() - began
            return
        self._begin_step()
        state.bookkeeping_ns += time.perf_counter_ns() - began

    def _final_cut(self) -> None:
        """At stop: the partial step after the last boundary is dropped, unless it is all; in an
        inference loop whose steps start at an outermost call, the last iteration is no partial
        step when it made as many outermost calls as the step before it (a sampling script's
        last image: its encoder, its denoiser calls, its decoder) and is kept."""
        state = self.state
        if not self._rec.recording:
            return
        if state.summaries:
            open_calls, last_calls = self._outer_calls[:2]
            if open_calls and not (state.boundary is _MODULE and last_calls <= open_calls):
                state.after_calls = {"model_calls": open_calls,  # (the work after the loop:
                                     "eval_calls": self._outer_calls[2],  # a final evaluation,
                                     "grad_calls": self._outer_calls[3]}  # a generation)
            if state.boundary is _MODULE and 0 < last_calls <= open_calls:
                state.notes.append(
                    "the last step ends when profiling stops (no later call opened another): "
                    "its outermost calls were as many as a whole step's, so it was kept (any "
                    "work after the loop is in it)"
                )
                self._cut()
            return
        if self._counter == 0:
            state.boundary = StepBoundary.WHOLE_RUN
        else:
            partial = (time.perf_counter_ns() - self._recent.began_ns) / 1e6 if (
                self._recent.began_ns) else 0.0  # fmt: skip
            share = 100 * state.warmup_ms / max(1e-9, state.warmup_ms + partial)
            state.notes.append(
                f"no complete step after warm-up ({self._counter} step(s) seen, warm-up "
                f"{self.warmup}): only the partial step after the last boundary is shown; "
                + (f"the warm-up step(s) took {state.warmup_ms:,.0f} ms, {share:.0f}% of the "
                   "profiled time, and are not in this report: " if state.warmup_ms else "")
                + "lower the warm-up (--warmup 0) to measure whole steps"
            )  # fmt: skip
        self._counter = max(self._counter, self.warmup)
        self._detailed = True  # the step is summarized in full whatever the schedule said
        self._cut()


def _summarize_detailed(
    state: Any,
    clock: Any,
    raw: tuple,
    lines: Callable[[], dict] | None,
    parent: list[int],
    activation: dict[int, int] | None,
    identical: dict[int, int],
    peak: int | None,
    fingerprinted: bool,
    audited: bool,
    other: tuple[dict[tuple, int] | None, dict[tuple, int] | None] = (None, None),
    cut: bool = False,
    calls: tuple[list, list[str], list[str]] | None = None,
    counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A detailed step's summary from its detached records (run when its batch is flushed,
    in step order); keeps the activation-bytes step and the first timelines in ``state``."""
    (start, end), forward, marks, segments = resolve_records(clock, raw)
    summary = summarize_step(
        parent=parent, forward=forward, marks=marks, step=(start, end), segments=segments,
        activation=activation, identical=identical, peak_memory_bytes=peak,
        fingerprinted=fingerprinted,
    )  # fmt: skip
    if activation is not None:
        state.memory_summary = summary
    intervals = summary.pop("_intervals")
    summary["lines"] = lines() if lines is not None else None
    if len(state.timelines) < _KEEP_TIMELINES:
        state.timelines.append({"forward": forward, "intervals": intervals, "step": (start, end),
                                "segments": segments, "wall": end - start})  # fmt: skip
    summary["audited"] = audited
    if counts is not None:  # what the collectors did in it (the overhead estimate's counts)
        summary["collect_counts"] = counts
    if cut:  # its hot lines stopped at RecentSteps' budget: an evaluation, a stall
        summary["lines_cut"] = True
    if other[0]:  # the other phase's sampled lines (collect/other_sampler.py), ns
        summary["other_lines"] = other[0]
    if other[1]:  # ... and the forward phase's Python outside torch
        summary["python_lines"] = other[1]
    if calls is not None and calls[0]:  # the user lines each outermost call ran under
        chains = [call[0] for call in calls[0]]
        summary["call_lines"] = step_call_lines(forward, chains, parent, calls[1], calls[2])
        summary["call_counts"] = step_call_counts(calls[0])
    return summary

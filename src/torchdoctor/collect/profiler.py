"""The step profiler: ``torchdoctor.Profiler`` (user loops) and ``torchdoctor.profile`` (a step fn).

Per module (by qualified path) and per region: forward and backward time, inclusive and self,
calls per step, activation bytes; per step: wall time split into phases (data, forward,
backward, optimizer, other) that add up to it; a representative step's timeline; identical-
input recomputation. The result is a :class:`~torchdoctor.session.Session`.

Step boundaries (``step_boundary``):

- ``"manual"``: ``prof.step()`` or ``torchdoctor.step()`` ends a step;
- ``"auto"`` (used by ``torchdoctor run`` on unmodified scripts): ``torchdoctor.step()`` markers
  if the script calls it, else optimizer steps (LBFGS closures included: their forward and
  backward count as forward and backward), else ``backward()`` calls (manual SGD loops), else
  calls of an outermost module (inference loops), else the whole run is one step. When the kind
  is only known after some activity (backward, module calls), the step that was running while
  deciding is dropped. ``config.step_boundary`` and ``config.notes`` say which was used.

Detail (``detail``, ``window``, ``period_steps``, ``period_s``, ``detail_budget``;
``collect/schedule.py``): by default the module tree, phases, activation bytes, recomputation
and the sync audit are recorded in bounded windows of steps (a due window waits while detail
cost more than ``detail_budget`` of the steps' time; 1.0: never), and the steps between them
are light (step time only, no module hooks); ``detail="always"`` records every step in full.
``config.detail`` lists the detailed steps; each step says whether it was.

Long runs: per-step summaries take bounded memory (``collect/step_store.py``); ``checkpoint=PATH``
writes the session so far there every ``checkpoint_every`` s (``collect/checkpoint.py``). Hooks
are installed at ``start()`` and removed on every exit path; only one profiler may be active at
a time (a nested one raises ``RuntimeError``).

Example:
    >>> import torch, torchdoctor
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> x = torch.randn(4, 8)
    >>> def train_step():
    ...     opt.zero_grad()
    ...     net(x).sum().backward()
    ...     opt.step()
    >>> session = torchdoctor.profile(train_step, model=net, steps=3, warmup=1, syncs=False)
    >>> [c["path"] for c in session["tree"]["children"]][:1]
    ['Sequential']
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import torch

from torchdoctor.collect.calibration_cache import speed_before_profiling
from torchdoctor.collect.checkpoint import DEFAULT_EVERY_S, Checkpointer
from torchdoctor.collect.children import ChildProcesses
from torchdoctor.collect.clocks import make_clock
from torchdoctor.collect.compiled import compile_seconds, compiled_frames, watch_compile
from torchdoctor.collect.device_clock import device_of, may_adopt_cuda_clock
from torchdoctor.collect.finish import build_session
from torchdoctor.collect.garbage import FrozenObjects
from torchdoctor.collect.grad_passes import GradPasses
from torchdoctor.collect.hook_events import HookEvents
from torchdoctor.collect.host_time import ThreadTimes
from torchdoctor.collect.install import Installation
from torchdoctor.collect.lines import LineCollector
from torchdoctor.collect.loader import TimedLoader
from torchdoctor.collect.memory import PeakMemory
from torchdoctor.collect.naming import source_of_code
from torchdoctor.collect.other_sampler import OtherPhaseSampler
from torchdoctor.collect.outermost import OutermostModules
from torchdoctor.collect.probes import probe_module_calls
from torchdoctor.collect.profiler_state import ProfilerState, StepBoundary, check_options
from torchdoctor.collect.profiler_steps import RecentSteps, StepCycle
from torchdoctor.collect.recorder import Recorder
from torchdoctor.collect.rounds import ModuleRound, OptimizerRound
from torchdoctor.collect.schedule import DETAIL_BUDGET, DetailSchedule
from torchdoctor.collect.script_options import forget_options
from torchdoctor.collect.state import STATE
from torchdoctor.collect.step_queue import StepQueue
from torchdoctor.collect.unhooked_models import unhooked_note
from torchdoctor.session import Session

_MARKER, _MODULE = StepBoundary.MARKER, StepBoundary.MODULE


class Profiler(StepCycle, HookEvents):
    """Profile a user loop; the Session is built when the profiler stops (``.session``).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(4, 4)
        >>> with Profiler(net, syncs=False) as prof:
        ...     for batch in prof.wrap_loader([torch.randn(2, 4)] * 3):
        ...         net(batch).sum().backward()
        ...         prof.step()
        >>> len(prof.session["steps"])
        3
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        *,
        syncs: bool = True,
        warmup: int = 0,
        max_steps: int | None = None,
        step_boundary: str = "manual",
        label: str | None = None,
        memory: bool = True,
        backward: bool = True,
        detail: str = "windows",
        window: int = 5,
        period_steps: int = 100,
        period_s: float = 60.0,
        detail_budget: float = DETAIL_BUDGET,
        hot_lines: bool = True,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: float = DEFAULT_EVERY_S,
    ) -> None:
        check_options(model, step_boundary, warmup, max_steps)
        self.model = model
        self.syncs = syncs
        self.warmup = warmup
        self.max_steps = max_steps
        self.step_boundary = step_boundary
        self.label = label
        self.memory = memory
        self.backward = backward
        self.hot_lines = hot_lines  # time per user source line (collect/lines.py)
        self.session: Session | None = None
        self.device: str | None = None
        self.state = ProfilerState(warmup=warmup, label=label, syncs=syncs, memory=memory,
                                   backward=backward, hot_lines=hot_lines)  # fmt: skip
        self._schedule = DetailSchedule(detail, window=window, period_steps=period_steps,
                                        period_s=period_s, budget=detail_budget)  # fmt: skip
        self._running = False
        self._clock: Any = None
        self._rec: Any = None  # the Recorder, made at start() (its clock depends on the device)
        self._meter: Any = None
        self._hooks: Any = None
        self._saved: Any = None  # saved-tensor hooks switch (activation bytes)
        self._module_hooks: Any = None  # module hooks switch (off in light steps)
        self._counter = 0  # completed steps (warm-up included, discarded cuts not)
        self._seen = {"backward": 0, "optimizer": 0, "manual_update": 0}
        # outermost module calls: in the open step, the last whole one, the open step's made
        # with the module in eval mode (each step's record says both: `model_calls`)
        self._outer_calls = [0, 0, 0, 0]  # this step's, the last step's, in eval, with grad
        self._step_outer: set[Any] = set()  # the open step's outermost modules (module steps)
        self._outer_modules = OutermostModules()  # all seen (an inference loop's light steps)
        # per outermost call of the open step: its user lines and its input's leading dimension
        self._chains: list[tuple[tuple, int | None, bool]] = []
        self._optimizer_depth = 0  # inside optimizer.step() (a closure may run the model)
        self._update_began, self._update_ns = 0, 0  # the optimizers' own updates this step
        self._closure_ran, self._step_optimizer = False, ""  # a closure ran; which optimizer
        self._no_grad_blocks: list[bool] = []  # per open no_grad block: a manual update?
        self._parked_audits: list[list[tuple[Any, int]]] = []  # per open data phase (hook_events)
        self._module_round = ModuleRound(
            lambda module: self._rec.names.known_path(id(module)) or type(module).__name__
        )  # several top-level modules in an inference loop
        self._optimizer_round = OptimizerRound()  # several optimizers stepping in turn
        self._audit: Any = None  # the sync audit started by this profiler (syncs=True)
        self._audit_context: Any = None
        self._paced: list[Any] = []  # audits paused between detail windows
        self._detailed = self._timing_lines = True  # the running step records full detail
        self._watch_cuda = False  # switch to CUDA events once the script uses CUDA (run)
        self._lines: Any = None  # the hot-lines collector (collect/lines.py), when hot_lines
        self._other: Any = None  # ... and the other phase's sampler (collect/other_sampler.py)
        self._grad_passes = GradPasses()  # autograd.grad passes by line (collect/grad_passes.py)
        self._in_forward: list[bool] = []  # per open backward pass: a loss's derivatives
        self._audited = True  # the running step is audited for syncs
        self._audit_calls = 0  # the paced audits' function-level calls at the last boundary
        # crash safety (collect/checkpoint.py): the session so far, written on a schedule
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self._checkpointer: Checkpointer | None = None
        self._step_listeners: list[Callable[[Profiler], None]] = []
        self._queue = StepQueue()  # steps not yet summarized (collect/step_queue.py)
        self._recent = RecentSteps()  # the last steps' host time: the detail budget
        self._host: ThreadTimes | None = None  # the thread's time on/waiting for a core
        self._host_began: Any = None  # ... its reading when the step began
        self._memory_counted = False  # a kept detailed step counted activation bytes
        # compiled code runs under this profiler: hooks and modes stay (collect/compiled.py)
        self._compiled, self._frames_at_start = False, 0
        #: this process is a fork of the profiled one (a DataLoader worker, a
        #: ``multiprocessing`` child): collection is off in it and nothing is written
        self.forked = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Profiler:
        """Install hooks and begin the first step."""
        if STATE.profiler is not None:
            raise RuntimeError(
                "another torchdoctor profiler is already active; nested or concurrent "
                "profilers are not supported: stop the outer one first, or mark the inner "
                'code with torchdoctor.region("name") instead'
            )
        if self._running or self.session is not None:
            raise RuntimeError("this Profiler was already used; create a new one per run")
        forget_options()  # (an earlier run's in this process; a watched script's stay)
        state = self.state
        state.device = self.device = device_of(self.model)
        self._clock = make_clock(self.device)
        self._watch_cuda = may_adopt_cuda_clock(self.model, self._clock)
        state.timing = self._clock.name
        self._started_s = time.perf_counter()
        state.detail = self._schedule.config()
        state.boundary = _MARKER if self.step_boundary == "manual" else None
        if self.step_boundary == "step_fn":
            state.boundary = StepBoundary.STEP_FN
        self._frames_at_start = compiled_frames()
        self._compile_s = compile_seconds()  # (its growth at a step boundary: compiling)
        rec = self._rec = state.recorder = Recorder(
            self._clock, backward=self.backward, memory=self.memory
        )
        if self.model is not None:
            rec.names.register_root(self.model)
        self._meter = PeakMemory(self.device)
        speed_before_profiling()  # (its tiny model, run under the hooks, was the script's)
        hooks = self._hooks = Installation()
        try:
            frozen = FrozenObjects()  # (collect/garbage.py: why)
            frozen.start()
            hooks.add_undo(frozen.release)
            self._module_hooks = hooks.add_module_hooks(rec.pre_hook, rec.post_hook)
            hooks.add_undo(self._module_hooks.watch_new(self._new_module_built))
            hooks.add_undo(watch_compile())  # (its hooks and modes: never Dynamo's frames)
            hooks.add_optimizer_hooks(self._optimizer_pre, self._optimizer_post)
            enter = self._backward_enter  # (the first pass: the script's objects exist)
            hooks.wrap_autograd(lambda *a: (frozen.again(), enter(*a)), self._backward_leave)
            hooks.wrap_no_grad(self._no_grad_enter, self._no_grad_leave)
            hooks.wrap_data_loader(self._data_enter, self._data_leave)
            state.children = ChildProcesses()
            hooks.add_undo(state.children.install())
            self._saved = hooks.add_saved_tensors_hooks(rec.pack, rec.unpack)
            rec.on_outermost = self._outermost  # (boundaries: under "auto" only)
            rec.hooks_end_of = self._module_hooks.hooks_end_of
            STATE.profiler = self
            STATE.step_index = 0
            STATE.module_stack.clear()
            hooks.add_undo(self._reset_state)
            self._lines = LineCollector(rec) if self.hot_lines else None
            if self._lines is not None:  # below the sync audit's mode: its cost is not a line's
                self._lines.start()
                hooks.add_undo(self._lines.close)
                self._other = OtherPhaseSampler(state.forward_functions)  # (other phase)
                if self._other.start():
                    hooks.add_undo(self._other.close)
                rec.phases.on_change = self._phase_changed  # parked in optimizer/data
                rec.on_owner = self._lines.owner_changed  # ... and inside library modules
            if self.syncs:
                self._enter_sync_audit()
        except BaseException:
            hooks.remove()
            raise
        self._running = True
        self._host = ThreadTimes()  # (collect/host_time.py: read at each step boundary)
        hooks.add_undo(self._host.close)
        self.add_step_listener(lambda _: frozen.again())  # (no backward: the first step)
        if self.checkpoint is not None and self.checkpoint_every > 0:
            self._checkpointer = Checkpointer(self.checkpoint, self.checkpoint_every,
                                              self.snapshot)  # fmt: skip
            self.add_step_listener(lambda p: p._checkpointer.at_step(p.steps_recorded))
        self._begin_step()
        return self

    def stop(self) -> Session:
        """Remove hooks and build the Session (also available as ``.session``)."""
        return self._finish(None)

    def __enter__(self) -> Profiler:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._finish(exc if exc_type is not None else None)
        return False

    def _finish(self, exc: BaseException | None) -> Session:
        if not self._running:
            if self.forked:  # a forked child's profile: empty, never written
                if self.session is None:
                    self.session = Session()
                return self.session
            if self.session is not None:
                return self.session
            raise RuntimeError("this Profiler was not started; call start() or use `with`")
        self._running = False
        state = self.state
        if exc is not None:
            state.interrupted = True
            state.error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            self.flush_steps()
            self._rec.frames.clear()  # calls left open by an exception end here
            self._rec.module_depth = 0
            self._final_cut()
            self.flush_steps()
        except Exception:
            if exc is None:
                raise
            state.notes.append("the last step could not be summarized after the error")
        finally:
            for audit in self._paced:
                audit.resume()
            audit = self._exit_sync_audit()
            self._rec.release_handles()
            self._hooks.remove()
        unhooked = unhooked_note(self._module_hooks.built())  # (gpytorch's models)
        if unhooked:
            state.notes.append(unhooked)
        probe_module_calls(self._rec, self.state, time.perf_counter() - self._started_s)
        state.run_ms = 1e3 * (time.perf_counter() - self._started_s)  # (start to stop)
        if state.first_kept_ns is not None:  # (the time before it: start-up and warm-up)
            state.before_ms = max(0.0, (state.first_kept_ns - 1e9 * self._started_s) / 1e6)
        self.session = build_session(state, audit, self._paced)
        if self._checkpointer is not None:  # the final session replaces the checkpoint
            self._checkpointer.finish(self.session)
        return self.session

    def leave_forked_child(self) -> None:
        """In a forked child (``os.register_at_fork``, below): remove every hook and mode and
        write nothing. The fork inherits the parent's hooks and, inside a detail window, its
        function modes: a DataLoader worker would time and audit every torch call of its
        ``__getitem__`` for a profile nobody reads (minGPT's workers slowed its steps 1.6x),
        and a child's checkpoint would overwrite the parent's session file."""
        self.forked = True
        self._running = False
        self._checkpointer = None
        self._step_listeners.clear()
        for audit in [*self._paced, self._audit]:
            if audit is not None:
                try:
                    audit.stop()
                except Exception:  # a child must never fail for the profiler
                    pass
        try:
            self._rec.release_handles()
        finally:
            self._hooks.remove()

    def snapshot(self) -> Session:
        """The Session of the steps so far, built while the profiler runs (checkpoints, live
        view) by the same function as at stop; call it at a step boundary."""
        self.flush_steps()
        return build_session(self.state, self._audit, self._paced)

    def add_step_listener(self, listener: Callable[[Profiler], None]) -> None:
        """Call ``listener(profiler)`` at every step boundary (after the step is summarized,
        outside any step's time): checkpoints, the live view, compaction."""
        self._step_listeners.append(listener)

    def _reset_state(self) -> None:
        if STATE.profiler is self:
            STATE.profiler = None
        STATE.phase = "other"
        STATE.step_index = -1
        STATE.module_stack.clear()

    # -- sync audit -----------------------------------------------------------------------
    def _enter_sync_audit(self) -> None:
        from torchdoctor.collect.syncs import sync_audit

        self._audit_context = sync_audit()
        self._audit = self._audit_context.__enter__()
        self.pace_audit(self._audit)

    def _exit_sync_audit(self) -> Any:
        context, self._audit_context = self._audit_context, None
        if context is not None:
            context.__exit__(None, None, None)
        return self._audit

    def pace_audit(self, audit: Any) -> None:
        """Pause a running sync audit in light steps (outside detail windows), so it costs
        nothing there; the profiler resumes it for detailed steps and when it stops."""
        self._paced.append(audit)
        if not self._detailed and not self._schedule.audits_every_step and audit.pause():
            self._audited = False

    # -- user API -------------------------------------------------------------------------
    def step(self) -> None:
        """End the current step (and begin the next)."""
        if self._running and STATE.profiler is self:
            self._marker()

    def user_marker(self) -> None:
        """A step marker from user code (``torchdoctor.step()``); ignored when each call of a
        step function is a step (``torchdoctor.profile``)."""
        if self.state.boundary is not StepBoundary.STEP_FN:
            self._marker()

    def _phase_changed(self, phase: str) -> None:
        self._lines.phase_changed(phase)
        self._other.phase_changed(phase)  # (a no-op when it is not installed)

    def wrap_loader(self, iterable: Iterable[Any]) -> Iterable[Any]:
        """Wrap a data iterable so the wait for each batch counts as the ``data`` phase."""
        return TimedLoader(self, iterable)

    def data_phase(self, entering: bool) -> bool:
        """Begin (``entering``) or end the ``data`` phase of a wrapped loader's ``next()``;
        returns whether the phase was entered (the profiler is recording)."""
        rec = self._rec
        if entering:
            if not rec.recording or STATE.profiler is not self:
                return False
            rec.phases.push("data")
            return True
        if STATE.profiler is self:
            rec.phases.pop()
        return False

    # -- events from hooks ----------------------------------------------------------------
    def _marker(self) -> None:
        previous = self.state.boundary
        if previous is StepBoundary.STEP_FN:
            self._cut()
            return
        if previous is not _MARKER:
            self._switch(_MARKER)
        # the first marked step began at an optimizer/backward/module cut: partial, dropped
        self._cut(discard=previous not in (None, _MARKER))

    def enter_region(self, name: str, where: Any) -> Any:
        """Open region ``name`` (``where``: the frame or function); the handle for exit."""
        rec = self._rec
        if not rec.recording or not rec.detailed:
            return None
        in_backward = rec.phases.phase == "backward"
        return rec.enter_region(name, source_of_code(where), in_backward), in_backward

    def exit_region(self, handle: Any) -> None:
        """Close the region opened with ``handle`` (from :meth:`enter_region`)."""
        if handle is not None and self._rec.recording:
            self._rec.exit_region(handle[0], handle[1])


def _after_fork_in_child() -> None:
    profiler = STATE.profiler
    if profiler is not None and profiler._running:
        try:
            profiler.leave_forked_child()
        except Exception:  # never keep a child from running its work
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

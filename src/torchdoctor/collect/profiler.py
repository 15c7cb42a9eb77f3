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

Long runs: per-step summaries take bounded memory (``collect/step_store.py``); ``checkpoint=PATH``
writes the session so far there every ``checkpoint_every`` s (``collect/checkpoint.py``).

Hooks are installed at ``start()`` and removed on every exit path; only one profiler may be
active at a time (a nested one raises ``RuntimeError``).

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
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import torch

from torchdoctor.collect.aggregate import summarize_step
from torchdoctor.collect.checkpoint import DEFAULT_EVERY_S, Checkpointer
from torchdoctor.collect.clocks import make_clock
from torchdoctor.collect.finish import build_session
from torchdoctor.collect.install import Installation
from torchdoctor.collect.loader import TimedLoader
from torchdoctor.collect.memory import PeakMemory
from torchdoctor.collect.recorder import Recorder
from torchdoctor.collect.rounds import ModuleRound, OptimizerRound
from torchdoctor.collect.state import STATE
from torchdoctor.collect.step_store import StepStore
from torchdoctor.session import Session

_BOUNDARIES = ("manual", "auto")
_KEEP_TIMELINES = 32


def _device_of(model: Any) -> str:
    if model is not None:
        for tensor in model.parameters():
            return str(tensor.device)
        for tensor in model.buffers():
            return str(tensor.device)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


class Profiler:
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
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: float = DEFAULT_EVERY_S,
    ) -> None:
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module or None, got {type(model).__name__}; "
                "pass the model whose submodules should be named, or None for all modules"
            )
        if step_boundary not in _BOUNDARIES:
            raise ValueError(
                f"step_boundary must be one of {_BOUNDARIES}, got {step_boundary!r}; use "
                "'manual' with prof.step() in your loop, or 'auto' to detect steps"
            )
        if warmup < 0 or (max_steps is not None and max_steps < 1):
            raise ValueError(
                f"warmup must be >= 0 and max_steps None or >= 1, got warmup={warmup}, "
                f"max_steps={max_steps}"
            )
        self.model = model
        self.syncs = syncs
        self.warmup = warmup
        self.max_steps = max_steps
        self.step_boundary = step_boundary
        self.label = label
        self.memory = memory
        self.backward = backward
        self.session: Session | None = None
        self._running = False
        self._notes: list[str] = []
        # crash safety (collect/checkpoint.py): the session so far, written on a schedule
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self._checkpointer: Checkpointer | None = None
        self._step_listeners: list[Callable[[Profiler], None]] = []

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
        self.device = _device_of(self.model)
        self._clock = make_clock(self.device)
        rec = self._rec = Recorder(self._clock, backward=self.backward, memory=self.memory)
        if self.model is not None:
            rec.names.register_root(self.model)
        self._meter = PeakMemory(self.device)
        self._summaries = StepStore()  # bounded: first steps, samples, streamed stats
        self._raw: list[dict[str, Any]] = []
        self._memory_summary: dict[str, Any] | None = None
        self._counter = 0  # completed steps (warm-up included, discarded cuts not)
        self._mode = "marker" if self.step_boundary == "manual" else None
        self._seen = {"backward": 0, "optimizer": 0}
        self._optimizer_depth = 0  # inside optimizer.step() (a closure may run the model)
        self._loaders: dict[int, dict[str, Any]] = {}  # DataLoader iterators seen: settings
        self._no_grad_blocks: list[bool] = []  # per open no_grad block: a manual update?
        self._module_round = ModuleRound()  # several top-level modules in an inference loop
        self._optimizer_round = OptimizerRound()  # several optimizers stepping in turn
        self._audit = self._audit_context = None
        self._error: str | None = None
        self._interrupted = False
        hooks = self._hooks = Installation()
        try:
            hooks.add_module_hooks(rec.pre_hook, rec.post_hook)
            hooks.add_optimizer_hooks(self._optimizer_pre, self._optimizer_post)
            hooks.wrap_autograd(self._backward_enter, self._backward_leave)
            hooks.wrap_no_grad(self._no_grad_enter, self._no_grad_leave)
            hooks.wrap_data_loader(self._data_enter, self._data_leave)
            self._saved = hooks.add_saved_tensors_hooks(rec.pack, rec.unpack)
            if self.step_boundary == "auto":
                rec.on_outermost = self._outermost
            STATE.profiler = self
            STATE.step_index = 0
            STATE.module_stack.clear()
            hooks.add_undo(self._reset_state)
            if self.syncs:
                self._enter_sync_audit()
        except BaseException:
            hooks.remove()
            raise
        self._running = True
        if self.checkpoint is not None and self.checkpoint_every > 0:
            self._checkpointer = Checkpointer(self.checkpoint, self.checkpoint_every,
                                              self.snapshot)  # fmt: skip
            self.add_step_listener(lambda p: p._checkpointer.at_step(p._summaries.count))
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
            if self.session is not None:
                return self.session
            raise RuntimeError("this Profiler was not started; call start() or use `with`")
        self._running = False
        if exc is not None:
            self._interrupted = True
            self._error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            self._rec.frames.clear()  # calls left open by an exception end here
            self._rec.module_depth = 0
            self._final_cut()
        except Exception:
            if exc is None:
                raise
            self._notes.append("the last step could not be summarized after the error")
        finally:
            audit = self._exit_sync_audit()
            self._rec.release_handles()
            self._hooks.remove()
        self.session = build_session(self, audit)
        if self._checkpointer is not None:  # the final session replaces the checkpoint
            self._checkpointer.finish(self.session)
        return self.session

    def snapshot(self) -> Session:
        """The Session of the steps so far, built while the profiler runs (checkpoints, live
        view) by the same function as at stop; call it at a step boundary."""
        return build_session(self, self._audit)

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

    def _exit_sync_audit(self) -> Any:
        context, self._audit_context = self._audit_context, None
        if context is not None:
            context.__exit__(None, None, None)
        return self._audit

    # -- user API -------------------------------------------------------------------------
    def step(self) -> None:
        """End the current step (and begin the next)."""
        if self._running and STATE.profiler is self:
            self._user_marker()

    def _user_marker(self) -> None:
        """A step marker from user code (``prof.step()``, ``torchdoctor.step()``)."""
        if not self._markers_from_profile:
            self._marker()

    _markers_from_profile = False  # profile() marks steps itself; user markers are ignored

    def wrap_loader(self, iterable: Iterable[Any]) -> Iterable[Any]:
        """Wrap a data iterable so the wait for each batch counts as the ``data`` phase."""
        return TimedLoader(self, iterable)

    # -- events from hooks ----------------------------------------------------------------
    def _marker(self) -> None:
        previous = self._mode
        if previous != "marker":
            self._switch("marker")
        # the first marked step began at an optimizer/backward/module cut: partial, dropped
        self._cut(discard=previous not in (None, "marker"))

    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._seen["optimizer"] += 1
        self._optimizer_depth += 1
        self._rec.phases.push("optimizer")

    def _no_grad_enter(self, grad_was_enabled: bool, opened_by_torch: bool = False) -> None:
        """In a loop that calls backward() but no optimizer, a ``no_grad`` block opened between
        passes (``p -= lr * p.grad``) is the hand-written optimizer step (not one opened by
        torch itself, such as ``clip_grad_norm_`` before the first ``optimizer.step()``)."""
        rec = self._rec
        manual_update = (
            grad_was_enabled
            and not opened_by_torch
            and self._seen["backward"] > 0
            and not self._seen["optimizer"]
            and self._mode in (None, "backward")
            and rec.phases.phase == "other"
        )
        self._no_grad_blocks.append(manual_update)
        if manual_update:
            rec.phases.push("optimizer")
            if not self._seen.get("manual_update"):
                self._seen["manual_update"] = 1
                self._notes.append(
                    "no_grad blocks between backward() calls count as the optimizer phase "
                    "(a hand-written update); grad-enabled code after them until backward() "
                    "as forward"
                )

    def _data_enter(self, iterator: Any = None) -> bool:
        """``next()`` on a DataLoader iterator: the wait for the batch is the ``data`` phase.
        Each loader's settings are noted once (the advice checks static findings against them)."""
        if iterator is not None and id(iterator) not in self._loaders:
            self._loaders[id(iterator)] = {
                "num_workers": int(getattr(iterator, "_num_workers", 0) or 0),
                "persistent_workers": bool(getattr(iterator, "_persistent_workers", False)),
                "pin_memory": bool(getattr(iterator, "_pin_memory", False)),
            }
        if not self._rec.recording:
            return False
        self._rec.phases.push("data")
        return True

    def _data_leave(self, pushed: bool) -> None:
        if pushed and self._rec.phases.phase == "data":
            self._rec.phases.pop()

    def _no_grad_leave(self) -> None:
        """After a manual update, what runs with grad enabled until the next backward() is the
        forward pass (the loss of a loop without modules would otherwise be ``other``)."""
        if not self._no_grad_blocks or not self._no_grad_blocks.pop():
            return
        phases = self._rec.phases
        phases.pop()
        if torch.is_grad_enabled() and phases.phase == "other":
            phases.enter_forward()

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Steps end at optimizer steps; with several in turn, at the one closing the round
        (``collect.rounds``), so a backward is measured in the step of its forward."""
        self._rec.phases.pop()
        self._optimizer_depth -= 1
        if self._mode == "marker":
            return
        # The step open now began at a backward or module cut (gradient accumulation: the
        # last micro-batch's backward): not a whole iteration, so it is dropped.
        partial = self._mode not in (None, "optimizer")
        if self._mode != "optimizer":
            self._switch("optimizer")
        action, note = self._optimizer_round.observe(optimizer)
        if note:
            self._notes.append(note)
        if action == "cut":
            self._cut(discard=partial)
        elif action == "decided":  # half-iterations so far: the step open now is a whole one
            self._summaries.clear()
            self._raw.clear()

    def _backward_enter(self, roots: Any = None) -> None:
        rec = self._rec
        if rec.region_calls and rec.recording:
            rec.phases.push("other")  # the graph walk is profiler overhead, not forward
            try:
                rec.hook_regions(roots)
            except Exception:  # never break the user's backward over region attribution
                rec.region_calls = []
                if "region backward attribution failed" not in self._notes:
                    self._notes.append("region backward attribution failed")
            finally:
                rec.phases.pop()
        rec.split_open_regions(rec.phases.phase != "backward")
        rec.phases.push("backward")

    def _backward_leave(self) -> None:
        rec = self._rec
        rec.bwd.append((0, 0, 2, rec.now()))  # ends calls whose inputs needed no grad
        rec.resume_open_regions()
        rec.phases.pop_backward()
        mode = self._mode
        if mode == "backward":
            self._cut()
        elif mode is None and self._rec.phases.phase != "optimizer":
            self._seen["backward"] += 1
            if self._seen["backward"] >= 2:
                self._switch("backward")
                self._cut(discard=True)

    def _outermost(self, module: Any = None) -> None:
        """An outermost module call: in an inference loop each step starts at one (with several
        top-level modules, at the one the loop opens with: ``collect.rounds``), so a module
        re-run with the same inputs every iteration shows up as recomputation across steps."""
        mode = self._mode
        if mode == "module":
            starts, revised = self._module_round.starts_step(module)
            if revised:  # the loop turned out to repeat several modules: partial steps so far
                self._notes.append(revised)
                self._summaries.clear()
                self._raw.clear()
                self._cut(discard=True)
            elif starts:
                self._cut()
        elif mode is None and not self._seen["backward"] and not self._optimizer_depth:
            # (module calls inside optimizer.step(closure), e.g. LBFGS, are no inference loop)
            needed = 2 if not torch.is_grad_enabled() else 4
            decided, note = self._module_round.observe(module, needed)
            if decided:
                self._switch("module")
                if note:
                    self._notes.append(note)
                self._cut(discard=True)

    def _switch(self, mode: str) -> None:
        if self._mode is not None and self._mode != mode and self._summaries:
            self._notes.append(
                f"step boundary changed from {self._mode} to {mode}; earlier steps dropped"
            )
            self._summaries.clear()
            self._raw.clear()
        self._mode = mode

    def _enter_region(self, name: str, where: Any) -> Any:
        rec = self._rec
        if not rec.recording:
            return None
        code = getattr(where, "f_code", None) or getattr(where, "__code__", None)
        line = getattr(where, "f_lineno", None) or getattr(code, "co_firstlineno", None)
        source = {"file": code.co_filename, "line": line, "end_line": line,
                  "function": code.co_name} if code is not None else None  # fmt: skip
        in_backward = rec.phases.phase == "backward"
        return rec.enter_region(name, source, in_backward), in_backward

    def _exit_region(self, handle: Any) -> None:
        if handle is not None and self._rec.recording:
            self._rec.exit_region(handle[0], handle[1])

    # -- steps ----------------------------------------------------------------------------
    def _begin_step(self) -> None:
        rec = self._rec
        profiled = self._counter >= self.warmup
        rec.count_memory = self.memory and profiled and self._memory_summary is None
        if rec.count_memory:
            self._saved.on()  # only the counting step pays for saved-tensor hooks
        self._meter.begin()
        rec.fingerprints_across_steps = self._mode == "module"
        rec.new_step(rec.now())
        STATE.step_index = self._counter

    def _cut(self, discard: bool = False) -> None:
        rec = self._rec
        if not rec.recording:
            return
        end_token = rec.now()
        peak = self._meter.end()
        (start, end), forward, marks, segments = rec.resolve_step(self._clock, end_token)
        if not discard and self._counter >= self.warmup:
            summary = summarize_step(
                parent=rec.parent, forward=forward, marks=marks, step=(start, end),
                segments=segments, activation=rec.act if rec.count_memory else None,
                identical=rec.identical, peak_memory_bytes=peak,
            )  # fmt: skip
            if rec.count_memory:
                self._memory_summary = summary
            intervals = summary.pop("_intervals")
            self._summaries.append(summary)
            if len(self._raw) < _KEEP_TIMELINES:
                self._raw.append({"forward": forward, "intervals": intervals, "step": (start, end),
                                  "segments": segments, "wall": end - start})  # fmt: skip
        rec.release_handles()
        self._saved.off()
        if not discard:
            self._counter += 1
        for listener in self._step_listeners:  # (each one catches its own errors)
            listener(self)
        if self.max_steps is not None and self._summaries.count >= self.max_steps:
            rec.recording = False
            self._notes.append(f"stopped collecting after max_steps={self.max_steps} steps")
            return
        self._begin_step()

    def _final_cut(self) -> None:
        """At stop: the partial step after the last boundary is dropped, unless it is all."""
        if not self._rec.recording or self._summaries:
            return
        if self._counter == 0:
            self._mode = "whole_run"
        else:
            self._notes.append(
                f"no complete step after warm-up ({self._counter} step(s) seen, warm-up "
                f"{self.warmup}): only the partial step after the last boundary is shown; "
                "lower the warm-up (--warmup) to measure whole steps"
            )
        self._counter = max(self._counter, self.warmup)
        self._cut()

"""What the profiler does on the events its hooks see: phases and step boundaries.

:class:`HookEvents` is the half of :class:`~torchdoctor.collect.profiler.Profiler` that reacts
to optimizer steps, backward passes, ``no_grad`` blocks, DataLoader batches and outermost module
calls: it moves the phase machine and, under ``step_boundary="auto"``, decides how steps are
cut (``collect/profiler.py`` describes the rules). The Profiler supplies the recorder
(``_rec``), the collected state (``state``), the step counters and ``_cut``/``_drop_steps``.

Example:
    >>> import torch, torchdoctor
    >>> net = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> with torchdoctor.Profiler(net, step_boundary="auto", syncs=False) as prof:
    ...     for _ in range(3):
    ...         net(torch.ones(1, 2)).sum().backward()
    ...         opt.step()
    >>> prof.session["config"]["step_boundary"]
    'optimizer'
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.utils.parametrize import ParametrizationList

from torchdoctor.collect.call_lines import leading_dim, user_chain
from torchdoctor.collect.compiled import compiled_frames, compiling
from torchdoctor.collect.engine_state import note_double_backward
from torchdoctor.collect.lines_install import insert_function_mode, remove_function_mode
from torchdoctor.collect.outermost import in_eval_mode
from torchdoctor.collect.profiler_state import ProfilerState, StepBoundary
from torchdoctor.collect.rounds import IN_TURN
from torchdoctor.collect.state import STATE

_host_ns = time.perf_counter_ns


def _timed_event(method: Callable[..., Any]) -> Callable[..., Any]:
    """Time a phase/step event handler into ``state.event_ns`` (the profiler's own work in
    every step, light ones included; the estimate adds it), less the closing of a step it ran
    (``bookkeeping_ns``, counted apart)."""

    @functools.wraps(method)
    def timed(self: Any, *args: Any) -> Any:
        if compiling():  # Dynamo tracing a compiled optimizer step (collect/compiled.py)
            return None
        state = self.state
        began, closing = _host_ns(), state.bookkeeping_ns
        try:
            return method(self, *args)
        finally:
            state.event_ns += _host_ns() - began - (state.bookkeeping_ns - closing)

    return timed


_PHASE_PUSHED, _HOOKS_MUTED, _AUDIT_PARKED = 1, 2, 4  # what _data_enter did, _data_leave undoes

_MARKER, _OPTIMIZER, _BACKWARD, _MODULE = (
    StepBoundary.MARKER, StepBoundary.OPTIMIZER, StepBoundary.BACKWARD, StepBoundary.MODULE
)  # fmt: skip



#: what the notes say of no_grad blocks between backward() calls (a hand-written update)
MANUAL_UPDATE_NOTE = (
    "no_grad blocks between backward() calls count as the optimizer phase (a hand-written "
    "update); grad-enabled code after them until backward() as forward"
)
#: ``_seen["manual_update"]`` when such a block was seen and no backward() after it yet
PENDING_NOTE = 2

class HookEvents:
    """Phase and step-boundary reactions to the profiler's hooks (see the module docstring).

    Example:
        >>> from torchdoctor.collect.profiler import Profiler
        >>> issubclass(Profiler, HookEvents)
        True
        >>> net = torch.nn.Linear(2, 1)
        >>> with Profiler(net, step_boundary="auto", syncs=False) as prof:
        ...     for _ in range(3):
        ...         net(torch.ones(1, 2)).sum().backward()
        >>> prof.session["config"]["step_boundary"]
        'backward'
    """

    state: ProfilerState
    _rec: Any
    _seen: dict[str, int]
    _step_outer: set[Any]
    _outer_modules: Any
    _outer_calls: list[int]
    _saved: Any
    _chains: list[tuple[tuple, int | None, bool]]
    step_boundary: str
    _optimizer_depth: int
    _update_began: int  # when the running optimizer step's update began (after its closure)
    _update_ns: int  # the optimizers' updates in the step so far
    _closure_ran: bool  # a closure ran inside optimizer.step() in the step so far
    _step_optimizer: str  # the class of the optimizer the step stepped last (steps' optimizer)
    _no_grad_blocks: list[bool]
    _module_round: Any
    _optimizer_round: Any
    _module_hooks: Any  # the module hooks switch (collect/install.py)
    _compiled: bool  # compiled code runs (collect/compiled.py)
    _frames_at_start: int  # frames Dynamo had compiled when the profiler started

    def _compiled_now(self) -> bool:
        """Whether compiled code has run under the profiler (sticky): a compiled module's
        wrapper was called, or Dynamo compiled a frame since the profiler started."""
        self._compiled = self._compiled or (
            self._rec.compiled_module_seen or compiled_frames() != self._frames_at_start
        )
        return self._compiled

    def _cut(self, discard: bool = False) -> None:  # pragma: no cover - the Profiler's
        raise NotImplementedError

    def _drop_steps(self) -> None:  # pragma: no cover - the Profiler's
        raise NotImplementedError

    _recent: Any  # RecentSteps (collect/profiler_steps.py)
    _counter: int
    warmup: int

    @_timed_event
    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> Any:
        if not self._seen["optimizer"] and threading.get_ident() != self._rec.thread:
            self._adopt_loop_thread()
        self._seen["optimizer"] += 1
        self.state.note_optimizer(optimizer)
        self._step_optimizer = type(optimizer).__name__
        self._optimizer_depth += 1
        self._rec.phases.push("optimizer")
        self._update_began = _host_ns()  # (no closure: the whole step is the update)
        # (args: the optimizer first, as torch's step wrapper passes them to its hooks)
        closure = kwargs["closure"] if kwargs and "closure" in kwargs else (
            args[1] if len(args) > 1 else None)
        if not callable(closure):
            return None
        # the update begins when the closure returns (Lightning runs its training step, and
        # its bookkeeping after backward, in the closure): time it apart (steps' update_ms)
        def after_closure() -> Any:
            try:
                return closure()
            finally:
                self._update_began, self._closure_ran = _host_ns(), True

        if kwargs and "closure" in kwargs:
            return args, {**kwargs, "closure": after_closure}
        return (args[0], after_closure, *args[2:]), kwargs

    def _adopt_loop_thread(self) -> None:
        """The first optimizer step runs on another thread than the one the profiler started
        in, which has run no module: the script trains in a thread of its own (a worker it
        starts and joins; a GUI's or an actor-learner's). Its module calls make the tree from
        now on, not "other threads'"."""
        rec = self._rec
        if len(rec.parent) > 1 or not rec.other_thread_calls:
            return  # (the profiler's thread runs modules too: the loop is there)
        rec.thread, rec.other_thread_calls = threading.get_ident(), 0
        if self._counter >= self.warmup:  # (the step open now recorded none of its modules)
            self.warmup = self.state.warmup = self._counter + 1
        self.state.notes.append(
            "the training loop runs on a thread of its own (not the one the profiler started "
            "in): the tree holds that thread's module calls from its first optimizer step on; "
            "its host syncs and data-loading phase are not collected and its hot lines only "
            "in part (they are followed on the starting thread): run the loop there for them")

    @_timed_event
    def _no_grad_enter(
        self, grad_was_enabled: bool, opened_by_torch: Callable[[], bool] = lambda: False
    ) -> bool:
        """In a loop that calls backward() but no optimizer, a ``no_grad`` block opened between
        passes (``p -= lr * p.grad``) is the hand-written optimizer step (not one opened by
        torch itself, such as ``clip_grad_norm_`` before the first ``optimizer.step()``).
        True once an optimizer stepped and no block is open: no block can be a hand-written
        update from then on, and the blocks need watching no more (``wrap_no_grad``)."""
        if self._seen["optimizer"] and not self._no_grad_blocks:
            return True
        rec = self._rec
        manual_update = (
            grad_was_enabled
            and self._seen["backward"] > 0
            and not self._seen["optimizer"]
            and self.state.boundary in (None, _BACKWARD)
            and rec.phases.phase == "other"
            and not opened_by_torch()
        )
        self._no_grad_blocks.append(manual_update)
        if manual_update:
            rec.phases.push("optimizer")
            if not self._seen["manual_update"]:  # said once a backward() follows (not for an
                self._seen["manual_update"] = PENDING_NOTE  # evaluation after the last one)
        return False

    @_timed_event
    def _data_enter(self, iterator: Any = None) -> int:
        """``next()`` on a DataLoader iterator: the wait for the batch is the ``data`` phase.
        Each loader's settings are noted once (the advice checks static findings against them).

        Modules the batch's loading calls on this process (torchvision's ``Normalize`` and
        ``Compose`` are modules; a frozen encoder in a ``collate_fn``) are data
        loading, not the model: the module hooks are off while the loader runs, so they neither
        take the step's boundary nor appear in the tree; their time is the data phase's."""
        if iterator is not None:  # (the frame: the user's code fetching, for a new iterator)
            self.state.note_loader(iterator, STATE.step_index, sys._getframe(1))
        token = 0
        hooks = self._module_hooks
        if hooks is not None and hooks.everywhere and not self._rec.module_depth:
            # (compiled since the step began: Lightning validates batch after batch in one)
            if self._compiled_now():  # Dynamo guards on the global hooks' keys: muted in place
                self._rec.muted = True  # (off and on again, each step recompiled the model)
            else:
                hooks.off()
            token |= _HOOKS_MUTED
        if self._rec.recording:
            self._rec.phases.push("data")
            token |= _PHASE_PUSHED
        if self._park_audits():
            token |= _AUDIT_PARKED
        return token

    def _park_audits(self) -> bool:
        """Take the sync audits' function modes off the stack while a loader yields a batch on
        this process: its loading runs on host data and makes no device sync, and each of its
        many small torch calls (a dataset's ``__getitem__``, the collate) paid the audit's
        dispatch: pytorch/examples' mnist_rnn measured 3.8 ms of data phase in detailed steps
        for 1.1 ms in light ones. Put back at the same depth by :meth:`_data_leave`."""
        parked = []
        for audit in (getattr(self, "_audit", None), *getattr(self, "_paced", ())):
            mode = getattr(audit, "_function_mode", None)
            depth = remove_function_mode(mode) if mode is not None else None
            if depth is not None:
                parked.append((mode, depth))
        if parked:
            self._parked_audits.append(parked)
        return bool(parked)

    @_timed_event
    def _data_leave(self, token: int) -> None:
        if token & _AUDIT_PARKED:
            for mode, depth in reversed(self._parked_audits.pop()):
                insert_function_mode(mode, depth)
        if token & _HOOKS_MUTED:
            if self._rec.muted:
                self._rec.muted = False
            else:
                self._module_hooks.on()
        if token & _PHASE_PUSHED and self._rec.phases.phase == "data":
            self._rec.phases.pop()

    @_timed_event
    def _no_grad_leave(self) -> None:
        """After a manual update, what runs with grad enabled until the next backward() is the
        forward pass (the loss of a loop without modules would otherwise be ``other``)."""
        if not self._no_grad_blocks or not self._no_grad_blocks.pop():
            return
        phases = self._rec.phases
        phases.pop()
        if torch.is_grad_enabled() and phases.phase == "other":
            phases.enter_forward()

    @_timed_event
    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Steps end at optimizer steps; with several in turn, at the one closing the round
        (``collect.rounds``), so a backward is measured in the step of its forward."""
        if self._update_began:  # (its pre-hook ran: the hooks were installed before the step)
            self._update_ns += _host_ns() - self._update_began
            self._update_began = 0
        self._rec.phases.pop()
        self._optimizer_depth -= 1
        mode = self.state.boundary
        if mode is _MARKER or mode is StepBoundary.STEP_FN:
            return
        # The step open now began at a backward or module cut (gradient accumulation: the
        # last micro-batch's backward): not a whole iteration, so it is dropped.
        partial = mode not in (None, _OPTIMIZER)
        if mode is not _OPTIMIZER:
            self._switch(_OPTIMIZER)
        action, note = self._optimizer_round.observe(optimizer)
        if action == "restart":  # (the round read first no longer holds: its note goes)
            self.state.notes[:] = [n for n in self.state.notes if IN_TURN not in n]
        if note:
            self.state.notes.append(note)
        if action == "cut":
            self._cut(discard=partial)
        elif action == "decided":  # half-iterations so far: the step open now is a whole one
            self._drop_steps()
        elif action == "restart":  # the round misread: the open step too is no whole one
            self._cut(discard=True)
            self._drop_steps()

    @_timed_event
    def _backward_enter(self, roots: Any = None, graph_kept: bool = False, grad: bool = False) -> None:
        if self._seen["manual_update"] == PENDING_NOTE:  # a no_grad block between backwards
            self._seen["manual_update"] = 1
            self.state.notes.append(MANUAL_UPDATE_NOTE)
        rec = self._rec
        if graph_kept or rec.knobs["gradient_graph"]:
            note_double_backward(rec.knobs, graph_kept)
        self._grad_passes.enter(sys._getframe(1) if grad and rec.detailed else None, rec.serial)
        if rec.region_calls and rec.recording:
            rec.phases.push("other")  # the graph walk is profiler overhead, not forward
            try:
                rec.hook_regions(roots)
            except Exception:  # never break the user's backward over region attribution
                rec.region_calls = []
                if "region backward attribution failed" not in self.state.notes:
                    self.state.notes.append("region backward attribution failed")
            finally:
                rec.phases.pop()
        rec.split_open_regions(rec.phases.phase != "backward")
        rec.phases.push("backward")
        self._in_forward.append(grad and graph_kept)  # (a loss's derivatives: forward goes on)

    @_timed_event
    def _backward_leave(self) -> None:
        self._grad_passes.leave()
        rec = self._rec
        if rec.detailed:
            rec.end_backward_pass()
            if rec.count_memory:  # saved activations: one pass's (gradient accumulation's
                self._saved.off()  # next micro-batch reuses the freed memory: half counted)
        rec.resume_open_regions()
        rec.phases.pop_backward(bool(self._in_forward and self._in_forward.pop()))
        mode = self.state.boundary
        if mode is _BACKWARD:
            self._cut()
        elif mode is None and rec.phases.phase != "optimizer":
            self._seen["backward"] += 1
            if self._seen["backward"] >= 2:
                self._switch(_BACKWARD)
                self._cut(discard=True)

    def _outermost(self, module: Any = None, args: Any = ()) -> None:
        """An outermost module call: in an inference loop each step starts at one (with several
        top-level modules, at the one the loop opens with: ``collect.rounds``), so a module
        re-run with the same inputs every iteration shows up as recomputation across steps."""
        if isinstance(module, ParametrizationList):  # a parametrized weight read outside a
            return  # forward (weight norm's conv.weight, read at load): no model call, no step
        mode = self.state.boundary if self.step_boundary == "auto" else _MARKER
        # (known before any cut: the light step it opens hooks it too, with the others; a model
        # built after the loop began was seen once, then lost: collect/module_hooks.watch_new)
        new = module is not None and self._outer_modules.saw(module)
        if mode is _MODULE:
            starts, revised = self._module_round.starts_step(module)
            if revised:  # the loop turned out to repeat several modules: partial steps so far
                self.state.notes.append(revised)
                self._drop_steps()
                self._cut(discard=True)
            elif starts:
                self._cut()
        elif mode is None and not self._seen["backward"] and not self._optimizer_depth:
            # (module calls inside optimizer.step(closure), e.g. LBFGS, are no inference loop)
            needed = 2 if not torch.is_grad_enabled() else 4
            decided, note = self._module_round.observe(module, needed)
            if decided:
                self._switch(_MODULE)
                if note:
                    self.state.notes.append(note)
                self._cut(discard=True)
        self._count_outer(module, args)  # (after any cut: the call belongs to the step it opens)
        if new:  # (an inference loop's light steps hook these alone; a new one's config)
            self.state.note_model(module)
        if mode is _MODULE and module is not None:  # (an encoder run before a decoder's steps)
            self._step_outer.add(module)
        if self._rec.detailed:  # the user lines it runs under (collect/call_lines.py)
            # (and its input's leading dimension: one sample per call is a rollout's shape;
            # and whether the model was in eval mode: an evaluation's calls, not a rollout's)
            evaluating = module is not None and in_eval_mode(module)
            self._chains.append((user_chain(sys._getframe(2)), leading_dim(args), evaluating))

    def _new_module_built(self) -> None:
        """A model was built while light steps hook the known outermost modules alone
        (``ModuleHooksSwitch.watch_new``): hook every module from now on, so its calls are seen
        (a new outermost module starts steps; the next light steps narrow to both). Inside an
        open call (a module made in a forward) nothing changes: that call's post-hooks are
        read after its forward, the global ones would end a call they never began."""
        if not self._rec.module_depth:
            self._module_hooks.on()
            self.state.light_hooks_outermost = False

    def _count_outer(self, module: Any, args: Any) -> None:
        """An outermost model call counted for the step's record (training loops' light steps
        hook their outermost modules with this alone: ``ModuleHooksSwitch.count``; detailed
        steps count through :meth:`_outermost`)."""
        calls = self._outer_calls
        calls[0] += 1
        if in_eval_mode(module):  # (an evaluation's calls: model.eval() first, maybe inside a
            # loss module that wraps the model)
            calls[2] += 1
        if torch.is_grad_enabled():  # (building a graph: no_grad / inference_mode not on)
            calls[3] += 1

    def _switch(self, mode: StepBoundary) -> None:
        state = self.state
        if state.boundary is not mode:  # (the steps cut so far were of another kind: an
            self._recent.forget()  # evaluation's forwards before the first optimizer step)
        if state.boundary is not None and state.boundary is not mode and self.steps_recorded:
            state.notes.append(
                f"step boundary changed from {state.boundary.value} to {mode.value}; earlier "
                "steps dropped"
            )
            self._drop_steps()
        state.boundary = mode

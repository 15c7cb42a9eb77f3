"""Hot lines: forward and backward time per user source line, for code no module names.

Mechanism (chosen after measuring, see docs/profiler.md "Hot lines" and BENCHMARKS.md): a
``torch.overrides.TorchFunctionMode`` sees every torch call made from Python (``torch.*``,
``torch.nn.functional.*``, tensor methods and operators). A call is charged to the first user
frame on the Python stack (``collect/lines_frames.py``: frames of torch, the standard library
and torchdoctor's collection code are skipped; a call made inside a third-party package is
charged to the user line that called into it, the package's frame kept as ``via`` detail).
Only the outermost torch call is seen (the mode is off while its handler runs), so a call is
timed once, with the profiler's clock (``perf_counter_ns`` on CPU, CUDA events resolved in
batches of steps on GPU). Forward time of a line = its torch calls plus the Python time between two
calls of the same execution of the line (same frame, same line, increasing bytecode offset, no
module or region call in between): a list comprehension on the line is the line's time.

Backward: a call that creates autograd nodes (the sequence-number counter moved, as for
regions) gets a pre-hook and a post-hook on each node it created; the node's backward time is
post - pre, charged to the line. The hooks die with the graph. They cost more than the call's
own bookkeeping, so they are sampled: per (line, op) a few calls of a step, in one collected
step of BACKWARD_EVERY (``collect/lines_table.py`` carries the measured backward per call to
the others).

Ownership: the innermost module or region running when the call is made owns it. Calls owned
by a module whose class is library code (``nn.Linear``) are that module's time in the tree and
are not charged to any line (the mode is parked while such a module runs:
``collect/lines_parking.py``); calls owned by the step (no module), a region or a user-defined
module refine that node's ``(self)``.

Limits: pure-Python work outside any torch call's line execution is not seen (a sampling
profiler would see it; torch's own Python frames are skipped); C++-only calls (inside a
``torch.compile``d graph, TorchScript) are charged to the line that called the compiled code;
the mode costs a few microseconds per torch call, so on steps made of thousands of tiny ops
it is the largest part of the profiler's overhead (measured in BENCHMARKS.md). Each step is
collected between :meth:`LineCollector.start` and :meth:`LineCollector.stop`, so it can be
switched on in detailed windows only.

Example:
    >>> import torch
    >>> from torchdoctor.collect.clocks import CpuClock
    >>> from torchdoctor.collect.recorder import Recorder
    >>> lines = LineCollector(Recorder(CpuClock()))
    >>> lines.start()
    >>> x = torch.ones(3, requires_grad=True)
    >>> y = (x * 2).sum()
    >>> table = lines.end_step(); lines.close()
    >>> sorted((v["calls"], v["torch_calls"]) for v in table.values())
    [(1, 1), (1, 2)]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from torchdoctor.collect.clocks import CpuClock
from torchdoctor.collect.compiled import DYNAMO_SKIPS, PROFILER_MODES, call_as_written, compiling
from torchdoctor.collect.lines_frames import USER, kind_of, locate
from torchdoctor.collect.lines_install import (
    COUNTED_PHASES,
    MATMUL,
    PASS,
    PENDING,
    PLAIN,
    PROBABILITIES,
    PYTHON_LEVEL,
    ROUTES,
    route_of,
    tensors_in,
    wrap_function_apply,
    wrap_gradient_utilities,
    wrap_zero_grad,
)
from torchdoctor.collect.lines_parking import ModeParking
from torchdoctor.collect.lines_table import EVENT_FIELDS, MAX_SITES, step_table
from torchdoctor.collect.lines_variants import probabilities_call, sparse_call
from torchdoctor.collect.region_graph import sequence_nr
from torchdoctor.collect.state import STATE

_LEAF_SEQ = 1 << 62
_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})
#: a node's two backward hooks cost more than the call's own bookkeeping (about 3.4 us each,
#: registered and fired): per (line, op), the nodes of the first SAMPLE_FIRST calls of a step
#: and of every SAMPLE_EVERY-th after are hooked, and the op's backward time is scaled by calls /
#: hooked calls (the calls of one line and op in a step are alike: the layers of a stack, the
#: iterations of a loop)
SAMPLE_FIRST = 1
SAMPLE_EVERY = 4
#: ... and only in one collected step of BACKWARD_EVERY (and in the first step a line and op
#: make graph nodes): in the others, the op's backward is its last measured backward per call
#: x its calls (a window's steps run the same code; such a line says ``backward_estimated``)
BACKWARD_EVERY = 4


#: the executions map holds the frame each line last called into (its id must not be reused
#: while compared), and a finished frame keeps its locals and its callers' alive: past this
#: many entries, those of frames no longer running are dropped (an evaluation loop of 70k
#: calls held 2.4 GB of tensors through 4096 finished frames before this bound)
PRUNE_AT = 64


def _keep_running(executions: dict[int, tuple], frame: Any) -> int:
    """Drop the entries of ``executions`` whose frame is not on the stack from ``frame``
    outwards; returns how many are left."""
    running = set()
    while frame is not None:
        running.add(id(frame))
        frame = frame.f_back
    for key in [key for key in executions if key not in running]:
        del executions[key]
    return len(executions)


def _zero() -> int:
    return 0


def _nothing() -> None:
    return None


class _Mode(TorchFunctionMode):
    def __init__(self, collector: LineCollector) -> None:
        super().__init__()
        self.collector = collector

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        if compiling():  # Dynamo tracing (collect/compiled.py): the call as it is
            return call_as_written(func, args, kwargs)
        collector = self.collector
        collector.seen += 1  # each call the mode sees costs its dispatch (the estimate)
        if kwargs is None:
            kwargs = {}
        try:
            route = ROUTES.get(func)
        except TypeError:
            route = PLAIN
        if route is None:
            route = route_of(func)
        if route & PYTHON_LEVEL:
            collector.seen_python += 1  # ... more through torch's Python dispatch
        if route & PASS or not collector.active or STATE.phase not in COUNTED_PHASES:
            if route & PASS:
                collector.last = None  # a backward pass ends the line's execution
            return func(*args, **kwargs)
        if route & MATMUL:  # (a sparse operand: its own op name and cure)
            return collector.timed(func, args, kwargs, sys._getframe(1), sparse_call(func, args))
        if route & PROBABILITIES:  # (a sigmoid's output: its own op name and cure)
            op = probabilities_call(func, args or tuple(kwargs.values()))
            return collector.timed(func, args, kwargs, sys._getframe(1), op)
        return collector.timed(func, args, kwargs, sys._getframe(1))


DYNAMO_SKIPS.append(_Mode.__torch_function__)  # (collect/compiled.py)
PROFILER_MODES.append(_Mode)


class LineCollector(ModeParking):
    """Per-step line timings; install with :meth:`start`, read a step with :meth:`end_step`.

    Example:
        >>> from torchdoctor.collect.recorder import Recorder
        >>> collector = LineCollector(Recorder(CpuClock()))
        >>> collector.start()
        >>> y = torch.ones(2).exp()
        >>> table = collector.end_step(); collector.close()
        >>> [sorted(entry["ops"]) for entry in table.values()]
        [['Tensor.exp', 'torch.ones']]
    """

    def __init__(self, recorder: Any, clock: Any = None) -> None:
        self.rec = recorder
        self.use_clock(clock if clock is not None else recorder.clock)
        self.active = False
        self._mode: _Mode | None = None
        self._parked: int | None = None  # the stack depth the parked mode is put back at
        self._unwrap: Callable[[], None] = _nothing
        self._unwrap_zero_grad: Callable[[], None] | None = None
        self.generation = 0
        self.cycle_start = 0  # the generation the BACKWARD_EVERY cycle counts from
        self.backward_per_call: dict[tuple, float] = {}  # (code, line, func) -> last measured ns
        # ... the sites hooked so far (known when a step ends; its table is built later)
        self.hooked_sites: set[tuple] = set()
        self.seen = 0  # torch calls the mode saw in this step (timed or not)
        self.seen_python = 0  # ... of which Python functions (dispatched by torch's Python path)
        self.step_seen = 0  # ... in the last step read by end_step
        self.step_seen_python = 0
        self.step_timed = 0  # ... of which timed
        self.own_ns = 0  # host ns spent in the timed calls' own bookkeeping (CPU clock only)
        self.step_own_ns = 0  # ... in the last step read by end_step
        self.step_cut = False  # ... passed its deadline
        self._reset()

    def use_clock(self, clock: Any) -> None:
        """Time with ``clock`` from now on (the profiler switches to CUDA events once a script
        has initialized CUDA; ``collect/device_clock.py``)."""
        self.clock = clock
        self.now: Callable[[], Any] = clock.now
        self._host = isinstance(clock, CpuClock)
        self._host_now = time.perf_counter_ns if self._host else _zero

    def _reset(self) -> None:
        # per call: code, line, owner, via code, via line, func, t0, t1, new execution, gap
        # (host ns or on CUDA the index of the previous call of the execution, -1 for none),
        # the calling user line's code and line at a new execution (else None, 0)
        # flat lists (EVENT_FIELDS, MARK_FIELDS per record): no container object per call is
        # kept, so collecting adds nothing for Python's cyclic GC to walk
        self.events: list[Any] = []
        self.marks: list[Any] = []  # (event, node id, 0 pre | 1 post, t) per mark
        # the last call: (frame id, code, line, lasti, serial, segments, index, host time)
        self.last: tuple | None = None
        # frame id -> (code, line, lasti, entry frame) of its last call, and each line's last
        # (lasti, entry frame) in the frame's current pass
        self.executions: dict[int, tuple] = {}
        self.prune_at = PRUNE_AT
        #: perf_counter_ns past which the step's lines stop (the profiler sets it per step)
        self.deadline_ns = 1 << 62
        self.hooked = 0
        self.cut_short = False  # the step passed its deadline: its lines are partial
        self.created: dict[tuple, int] = {}  # (code, line, func) -> calls that made graph nodes
        self.sampled: dict[tuple, int] = {}  # ... of which had their nodes hooked
        # this step measures backward (else: per-call figures of earlier steps, see end_step)
        self.hook_step = (self.generation - self.cycle_start) % BACKWARD_EVERY == 0

    # -- install --------------------------------------------------------------------------
    def start(self) -> None:
        """Push the function mode and wrap ``autograd.Function.apply`` (collection resumes in
        the running step)."""
        if self._mode is None:
            self._mode = _Mode(self)
            torch._C._push_on_torch_function_stack(self._mode)
            self._unwrap = wrap_function_apply(self)
        if self._unwrap_zero_grad is None:  # once: a wrapper installed over it stays valid
            undo_zero_grad, undo_utilities = wrap_zero_grad(self), wrap_gradient_utilities(self)
            self._unwrap_zero_grad = lambda: (undo_zero_grad(), undo_utilities())
        else:
            self.unpark()
        self.in_library = False
        self.seen = self.seen_python = 0  # (a shadow step's calls, passed through: no cost)
        self.shadow = False
        self.active = True

    def stop(self) -> None:
        """Remove the function mode (wherever it is on the mode stack) and the wrapper."""
        self.active = self.shadow = False
        mode, self._mode = self._mode, None
        parked, self._parked = self._parked, None
        self._park_pending = False
        if mode is not None:
            try:
                if parked is None:
                    self.retire(mode)
            finally:
                self._unwrap()

    def close(self) -> None:
        """:meth:`stop` for good: also restore ``Optimizer.zero_grad`` and
        ``clip_grad_norm_``'s kin (``lines_install.GRADIENT_UTILITIES``)."""
        self.stop()
        if self.settle in PENDING:  # (a stray left inert if this runs inside its handler)
            self.settle()
            PENDING.remove(self.settle)
        undo, self._unwrap_zero_grad = self._unwrap_zero_grad, None
        if undo is not None:
            undo()

    # -- hot path -------------------------------------------------------------------------
    def timed(self, func: Any, args: tuple, kwargs: dict, frame: Any, op: Any = None) -> Any:
        """Run ``func`` timed and charged to the user line above ``frame`` (``op``: what to
        name the call, default ``func``)."""
        rec = self.rec
        if not rec.recording:
            return func(*args, **kwargs)
        entered = self._host_now()
        frames = rec.frames
        owner = frames[-1][0] if frames else 0
        if owner and rec.library[owner]:
            return func(*args, **kwargs)
        line_frame, via, entry = locate(frame)
        if line_frame is None:
            return func(*args, **kwargs)
        code = line_frame.f_code
        lineno = line_frame.f_lineno
        lasti = line_frame.f_lasti
        key_code, key_line = code, lineno
        if code.co_name in _COMPREHENSIONS:  # its line is the enclosing function's line
            outer = line_frame.f_back
            if outer is not None and kind_of(outer.f_code) == USER:
                key_code, key_line = outer.f_code, outer.f_lineno
        serial = rec.serial
        segments = len(rec.phases.segments)
        events = self.events
        index = len(events) // EVENT_FIELDS
        # A new execution of the line: the frame had not called from it yet, or jumped back to
        # it (a loop), or called a new function from the same instruction (a library call in a
        # loop; the entry frame is held, so its id cannot be reused while compared). Coming
        # back further on in one statement over several lines is the same execution (an
        # operator whose operands' calls are on the next lines: efficient-kan's Cox-de Boor
        # recursion, 3 iterations, read as 9 executions of its first line)
        frame_id = id(line_frame)
        executions = self.executions
        state = executions.get(frame_id)
        if state is None or state[0] is not code:
            state = (code, lineno, lasti, entry, {})
        seen = state[4].get(lineno)
        new = (
            seen is None
            or seen[0] > lasti
            or (seen[0] == lasti and (entry is None or entry is not seen[1]))
        )
        if new and time.perf_counter_ns() > self.deadline_ns:
            self.active = False  # the step ran far past a typical one (an evaluation inside
            self.cut_short = True  # it): its lines stop here; the profiler leaves it out
            return func(*args, **kwargs)
        if new and len(executions) > self.prune_at:
            self.prune_at = max(PRUNE_AT, 2 * _keep_running(executions, line_frame))
        if new and seen is not None:  # (a new pass: the other lines' calls are behind it)
            state[4].clear()
        state[4][lineno] = (lasti, entry)
        executions[frame_id] = (code, lineno, lasti, entry, state[4])
        # Python time on the line since its previous torch call, when no other torch call,
        # module or region ran in between (this collector's own work excluded on the host
        # clock; on CUDA, the device time between the two calls). Not new: this frame's last
        # call was on this line, so the last call overall being this frame's is enough.
        last = self.last
        if (
            not new
            and last is not None
            and last[0] == frame_id
            and last[2] == lineno
            and last[4] == serial
            and (last[5] == segments)
        ):
            gap = entered - last[7] if self._host else last[6]
        else:
            gap = -1
        seq0 = sequence_nr()
        now = self.now
        t0 = now()
        out = func(*args, **kwargs)
        t1 = now()
        seq1 = sequence_nr()
        c_code, c_line = None, 0  # the user line calling this function, at a new execution
        if new:
            caller = line_frame.f_back
            if caller is not None and caller.f_code.co_name in _COMPREHENSIONS:
                caller = caller.f_back  # the function the comprehension is in
            if caller is not None and kind_of(caller.f_code) == USER:
                c_code, c_line = caller.f_code, caller.f_lineno
        name = func if op is None else op
        via_code, via_line = (via.f_code, via.f_lineno) if via is not None else (None, 0)
        events.extend((key_code, key_line, owner, via_code, via_line, name, t0, t1, new, gap,
                       c_code, c_line))  # fmt: skip
        if seq1 > seq0:
            counts = self.created
            site = (key_code, key_line, name)
            made = counts[site] = counts.get(site, 0) + 1
            if (made <= SAMPLE_FIRST or made % SAMPLE_EVERY == 0) and (
                self.hook_step or site not in self.hooked_sites
            ):
                self.sampled[site] = self.sampled.get(site, 0) + 1
                self._hook_backward(out, seq0, seq1, index)
        left = self._host_now()
        self.last = (frame_id, code, lineno, lasti, serial, segments, index, left)
        if self._host:  # the collector's own time in this call (no extra clock reading)
            self.own_ns += left - entered - (t1 - t0)
        return out

    # -- backward -------------------------------------------------------------------------
    def _mark(self, event: int, node: int, which: int, generation: int, *_: Any) -> None:
        if generation == self.generation:
            self.marks.extend((event, node, which, self.now()))

    def _hook_backward(self, out: Any, seq0: int, seq1: int, event: int) -> None:
        """Pre- and post-hooks on the autograd nodes the call created (numbered in [seq0,
        seq1)), found from its outputs' ``grad_fn`` (most calls make one node: no walk)."""
        generation = self.generation
        wanted = seq1 - seq0
        stack = []
        for tensor in tensors_in(out):
            fn = tensor.grad_fn
            if fn is not None and fn not in stack:
                stack.append(fn)
        seen: set[Any] = set()
        while stack and wanted > 0:
            fn = stack.pop()
            if fn in seen:
                continue
            seen.add(fn)
            seq = fn._sequence_nr()
            if not seq0 <= seq < seq1:
                continue
            wanted -= 1
            node = self.hooked = self.hooked + 1
            try:
                fn.register_prehook(partial(self._mark, event, node, 0, generation))
                fn.register_hook(partial(self._mark, event, node, 1, generation))
            except RuntimeError:  # a node refusing hooks: its backward stays unmeasured
                continue
            if wanted > 0:
                stack.extend([nxt for nxt, _ in fn.next_functions if nxt is not None])

    # -- steps ----------------------------------------------------------------------------
    def measure_backward_now(self) -> None:
        """Hook the lines' backward in the step now starting and count the BACKWARD_EVERY
        cycle from it (the profiler's first kept step: its lines' backward is then measured in
        a step it keeps, not only in warm-up)."""
        self.cycle_start, self.hook_step = self.generation, True

    def end_step(self) -> dict[tuple, dict[str, Any]]:
        """This step's lines (and reset for the next): ``(file, line, function, first line,
        owner node) -> {"forward_ns", "backward_ns", "calls", "torch_calls", "ops", "via",
        "callers"}``."""
        return self.take_step()()

    def take_step(self) -> Callable[[], dict[tuple, dict[str, Any]]]:
        """End the step (its counts are read at once: ``step_seen``, ``step_timed``, ...) and
        return what builds its table (:meth:`end_step`), to be called later, in step order
        (a line's backward per call carries from one table to the next)."""
        events, marks = self.events, self.marks
        created, sampled = self.created, self.sampled
        self.step_seen, self.seen = self.seen, 0
        self.step_seen_python, self.seen_python = self.seen_python, 0
        self.step_own_ns, self.own_ns = self.own_ns, 0
        self.step_timed = len(events) // EVENT_FIELDS
        self.step_cut = self.cut_short
        self.generation += 1
        if len(self.hooked_sites) > MAX_SITES:  # (as the table's memory of them)
            self.hooked_sites.clear()
        self.hooked_sites.update(site for site, n in sampled.items() if n)
        self._reset()
        return partial(
            step_table,
            events,
            marks,
            self.clock,
            host=self._host,
            created=created,
            sampled=sampled,
            backward_per_call=self.backward_per_call,
        )

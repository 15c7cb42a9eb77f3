"""What a profiler has collected, as one typed object handed to session building.

:class:`ProfilerState` holds the options of a run, the per-step summaries, the kept timelines,
the notes and the node registry (the :class:`~torchdoctor.collect.recorder.Recorder`);
``collect/finish.py`` builds the Session from it alone. :class:`StepBoundary` names how steps
were cut (the Session's ``config.step_boundary`` is its value).

Example:
    >>> state = ProfilerState(warmup=1)
    >>> state.boundary_name, StepBoundary.OPTIMIZER.note
    ('whole_run', 'steps end at optimizer.step() calls')
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from torchdoctor.collect.engine_state import (
    attention_dropout,
    loader_settings,
    loader_site,
    loop_driver,
    optimizer_settings,
)
from torchdoctor.collect.host_time import HOST_KEYS
from torchdoctor.collect.padding import PADDING_LENGTHS
from torchdoctor.collect.padding import resolve as resolve_padding
from torchdoctor.collect.step_store import StepStore

_NO_REFERENCE = object()  # an iterator that takes no weak reference
#: steps with compilation listed in the session (the totals count all)
COMPILE_STEPS = 50
#: new iterators' first steps kept per DataLoader setting (an epoch each, without persistent workers)
LOADER_STARTS = 256


class StepBoundary(str, Enum):
    """How steps are cut: by markers, optimizer steps, backward calls, outermost module calls,
    calls of a step function, or not at all (the whole run is one step).

    Example:
        >>> StepBoundary("module").note
        'no backward was seen: each call of the outermost module is one step'
    """

    MARKER = "marker"
    OPTIMIZER = "optimizer"
    BACKWARD = "backward"
    MODULE = "module"
    WHOLE_RUN = "whole_run"
    STEP_FN = "step_fn"

    @property
    def note(self) -> str:
        """The sentence the Session's notes open with."""
        return _NOTES[self]


_NOTES = {
    StepBoundary.MARKER: "steps end at torchdoctor.step() / Profiler.step() calls",
    StepBoundary.OPTIMIZER: "steps end at optimizer.step() calls",
    StepBoundary.BACKWARD: "no optimizer step was seen: steps end at backward() calls",
    StepBoundary.MODULE: "no backward was seen: each call of the outermost module is one step",
    StepBoundary.WHOLE_RUN: "no step boundary was seen: the whole run is one step",
    StepBoundary.STEP_FN: "each call of the step function is one step",
}


#: steps whose outermost input shape and modules are kept (the first ones: enough to see it
#: grow); after them, up to as many more steps whose shape or modules differ from the most
#: common (a Whisper segment's encoder step every ~224 decoder steps, over a long run)
INPUT_SHAPES = 2000


@dataclass
class ProfilerState:
    """Options and collected data of one profiler run (see the module docstring).

    ``summaries``: one dict per kept step (``collect/aggregate.py``), ``detailed`` saying
    whether the module tree was recorded in it; ``timelines``: raw events of a few detailed
    steps (the representative timeline); ``memory_summary``: the step that counted
    activation bytes.

    Example:
        >>> ProfilerState().detailed_summaries()
        []
    """

    warmup: int = 0
    label: str | None = None
    syncs: bool = False
    memory: bool = True
    backward: bool = True
    hot_lines: bool = True
    device: str = "cpu"
    timing: str = "perf_counter"
    detail: dict[str, Any] = field(default_factory=dict)
    boundary: StepBoundary | None = None
    recorder: Any = None
    summaries: StepStore = field(default_factory=StepStore)
    timelines: list[dict[str, Any]] = field(default_factory=list)
    memory_summary: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # DataLoader settings -> iterators begun with them (a loader without persistent workers
    # begins one per epoch, starting its workers anew)
    loaders: dict[tuple[tuple[str, Any], ...], int] = field(default_factory=dict)
    # optimizers stepped during the run, by id: their settings (engine_state.optimizer_settings)
    optimizers: dict[int, dict[str, Any]] = field(default_factory=dict)
    _iterators: dict[int, Any] = field(default_factory=dict)  # id -> (weak reference, key)
    # loader settings -> (the last step it fed, how many steps it fed): the training loader
    # feeds every step, an evaluation's loader a few (the advice is about the first)
    loader_steps: dict[tuple[tuple[str, Any], ...], tuple[int, int]] = field(default_factory=dict)
    # loader settings -> the kept steps (their index in the session) that fetched a new
    # iterator's first batch: a loader without persistent workers starts them there
    loader_starts: dict[tuple[tuple[str, Any], ...], list[int]] = field(default_factory=dict)
    children: Any = None  # processes the script started (collect/children.py)
    # (file, function) of the library frames the model is called through (a Trainer's loop):
    # the other phase's sampled lines are split at the deepest of them (collect/other_chains.py)
    forward_functions: set[tuple[str, str]] = field(default_factory=set)
    # profiled step -> the shape of its outermost call's first input (steps cut at module calls)
    input_shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # ... and the outermost modules it called (their names, sorted; one tuple per set): an
    # encoder run once before a decoder's steps (Whisper's AudioEncoder per 30 s segment)
    step_modules: dict[int, tuple[str, ...]] = field(default_factory=dict)
    _module_sets: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)
    _usual: dict[str, Any] = field(default_factory=dict)  # the first steps' most common ones
    # torch.compile compiling inside kept steps: (profiled step index, ms), the first
    # COMPILE_STEPS kept, and the totals of all
    compile_steps: list[tuple[int, float]] = field(default_factory=list)
    compile_ms: float = 0.0
    compile_step_count: int = 0
    bookkeeping_ns: int = 0  # host time spent closing steps (measured, exact)
    event_ns: int = 0  # host time in the phase and step event handlers, every step (measured)
    hook_ns: int = 0  # host time spent inside the module hooks of kept detailed steps
    hook_calls: int = 0  # ... and the module calls those hooks recorded (a per-call cost)
    graph_hooks: int = 0  # ... and the autograd hooks they registered (backward marks)
    line_steps: int = 0  # kept detailed steps with hot lines (not control steps)
    line_calls_seen: int = 0  # torch calls the hot-lines mode saw in them
    line_calls_timed: int = 0  # ... of which it timed
    line_calls_python: int = 0  # ... of which Python functions (torch's Python dispatch path)
    line_own_ns: int = 0  # host time the collector measured in its own work (CPU clock)
    # hooks' + collector's measured host time in the first kept detailed step (its first calls
    # register modules and classify code; the estimate adds what it has over the later steps)
    first_detail_ns: int | None = None
    # steps cut at module calls: light steps hooked their outermost modules alone (else every
    # module: collect/outermost.py), as the last light step did
    light_hooks_outermost: bool = False
    warmup_ms: float = 0.0  # wall time of the warm-up steps (not in the report)
    # outermost model calls after the last step (in the partial step dropped at stop): how
    # many, in eval mode, with autograd on
    after_calls: dict[str, int] | None = None
    run_ms: float | None = None  # wall time from the profiler's start to its stop
    first_kept_ns: int | None = None  # perf_counter_ns when the first kept step began
    before_ms: float | None = None  # ... after the profiler's start (start-up, warm-up)
    # steps kept, then dropped when the boundary was revised (timm's benchmark.py --bench both:
    # 55 inference forwards cut at each model call, then the training steps), and their time
    dropped_steps: int = 0
    dropped_ms: float = 0.0
    warmup_compile_ms: float = 0.0  # torch.compile compiling in the warm-up steps
    # a Hugging Face model's attention dropout inside SDPA (engine_state.attention_dropout)
    attention_dropout: dict[str, Any] | None = None
    interrupted: bool = False
    error: str | None = None

    @property
    def boundary_name(self) -> str:
        return (self.boundary or StepBoundary.WHOLE_RUN).value

    def note_model(self, module: Any) -> None:
        """An outermost module seen for the first time: its attention dropout inside SDPA, if
        any (what the dropout advice adds to the Dropout modules' time)."""
        if self.attention_dropout is None:
            self.attention_dropout = attention_dropout(module)

    def note_optimizer(self, optimizer: Any) -> None:
        """Note an optimizer's settings the first time it steps.

        Example:
            >>> import torch
            >>> state, opt = ProfilerState(), torch.optim.SGD(torch.nn.Linear(1, 1).parameters())
            >>> state.note_optimizer(opt); state.note_optimizer(opt)
            >>> [o["type"] for o in state.optimizers.values()]
            ['SGD']
        """
        if id(optimizer) not in self.optimizers and len(self.optimizers) < 16:
            try:
                self.optimizers[id(optimizer)] = optimizer_settings(optimizer)
            except Exception:  # an optimizer of unusual shape: nothing to say about it
                self.optimizers[id(optimizer)] = {"type": type(optimizer).__name__}

    def note_loader(self, iterator: Any, step: int = -1, frame: Any = None) -> None:
        """Count a DataLoader iterator the first time one of its batches is fetched (by its
        settings: ``num_workers``, ``persistent_workers``, ``pin_memory``, and the user's
        code that fetches, from ``frame`` outward: ``loader_site``), and the steps (``step``:
        the running one's index) its batches are fetched in.

        Example:
            >>> class It: _num_workers, _persistent_workers = 2, False
            >>> state, a, b = ProfilerState(), It(), It()
            >>> state.note_loader(a, 0); state.note_loader(a, 1); state.note_loader(b, 1)
            >>> state.loaders
            {(('num_workers', 2), ('persistent_workers', False), ('pin_memory', False)): 2}
            >>> list(state.loader_steps.values())  # fed steps 0 and 1
            [(1, 2)]
        """
        known = self._iterators.get(id(iterator))
        if known is not None and (known[0] is _NO_REFERENCE or known[0]() is iterator):
            key = known[1]
        else:
            driver = loop_driver(frame)  # (the Trainer's own loader: its knobs, not DataLoader)
            key = tuple(loader_settings(iterator).items()) + loader_site(frame) + (
                (("driver", driver),) if driver else ())
            try:  # (a weak reference: an ended epoch's iterator and its workers are not kept)
                self._iterators[id(iterator)] = (weakref.ref(iterator), key)
            except TypeError:  # (__slots__ without __weakref__: known by its id alone)
                self._iterators[id(iterator)] = (_NO_REFERENCE, key)
            if len(self._iterators) > 4096:  # dead ones out (a run of many short loops)
                self._iterators = {
                    k: (r, c) for k, (r, c) in self._iterators.items()
                    if r is _NO_REFERENCE or r() is not None
                }  # fmt: skip
            self.loaders[key] = self.loaders.get(key, 0) + 1
            if step >= self.warmup:  # (a kept step: its index in the session)
                starts = self.loader_starts.setdefault(key, [])
                if len(starts) < LOADER_STARTS:
                    starts.append(step - self.warmup)
        last, count = self.loader_steps.get(key, (-1, 0))
        if step >= 0 and step != last:
            self.loader_steps[key] = (step, count + 1)

    def note_input_shape(self, index: int, shape: tuple[int, ...] | None) -> None:
        """Profiled step ``index`` began with a call of the outermost module on an input of
        ``shape`` (the first INPUT_SHAPES steps are kept: session["steps"][i]["input_shape"]).

        Example:
            >>> state = ProfilerState()
            >>> state.note_input_shape(0, (1, 12)); state.input_shapes
            {0: (1, 12)}
        """
        if shape is not None and self._kept(self.input_shapes, "shape", shape):
            self.input_shapes[index] = shape

    def _kept(self, kept: dict[int, Any], what: str, value: Any) -> bool:
        """Whether a step's ``value`` is kept in ``kept``: the first INPUT_SHAPES steps', then
        as many more that differ from the most common of those (see INPUT_SHAPES)."""
        if len(kept) < INPUT_SHAPES:
            return True
        if len(kept) >= 2 * INPUT_SHAPES:
            return False
        if what not in self._usual:
            self._usual[what] = Counter(kept.values()).most_common(1)[0][0]
        return value != self._usual[what]

    def note_step_modules(self, index: int, names: set[str]) -> None:
        """Profiled step ``index`` (cut at module calls) called the outermost modules
        ``names`` (the first INPUT_SHAPES steps are kept: :meth:`step_entries`).

        Example:
            >>> state = ProfilerState()
            >>> state.note_step_modules(0, {"TextDecoder", "AudioEncoder"}); state.step_modules
            {0: ('AudioEncoder', 'TextDecoder')}
        """
        if names:
            key = tuple(sorted(names))
            key = self._module_sets.setdefault(key, key)
            if self._kept(self.step_modules, "modules", key):
                self.step_modules[index] = key

    def common_step_modules(self) -> list[str] | None:
        """The outermost modules most steps called, when some steps called others (None:
        steps not cut at module calls, or all alike).

        Example:
            >>> state = ProfilerState()
            >>> for i, names in enumerate(({"Dec"}, {"Dec", "Enc"}, {"Dec"})):
            ...     state.note_step_modules(i, names)
            >>> state.common_step_modules()
            ['Dec']
        """
        if len(self._module_sets) < 2 or not self.step_modules:
            return None
        if "modules" in self._usual:  # (the later steps kept are the unusual ones)
            return list(self._usual["modules"])
        return list(Counter(self.step_modules.values()).most_common(1)[0][0])

    def step_entries(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``session["steps"]`` of the kept per-step summaries: index, wall time, phases, peak
        memory, whether detailed, the profiled thread's ms on a core and waiting for one
        (``cpu_ms``, ``cpu_wait_ms``; the process's ``sys_ms`` and ``minor_faults``:
        ``collect/host_time.py``), its outermost model calls
        (``model_calls``; ``eval_calls`` of them with the model in eval mode, when any: light
        steps count them with a hook on the outermost modules alone); with steps cut at module
        calls, the outermost input's shape
        and, where a step called other outermost modules than most, those
        (``outer_modules``); ``lines_cut`` where its hot lines stopped at the detail budget;
        ``optimizer``, the class of the optimizer it stepped, where the run stepped several.

        Example:
            >>> state = ProfilerState()
            >>> state.note_input_shape(0, (1, 3))
            >>> state.step_entries([{"wall_ms": 2.0, "phases": {}, "peak_memory_bytes": 0}])
            [{'index': 0, 'wall_ms': 2.0, 'phases': {}, 'peak_memory_bytes': 0, 'detailed': True, 'input_shape': [1, 3]}]
        """
        common = self.common_step_modules()
        entries, padded = [], 0
        # the class of the optimizer each step stepped, where the run changed it (Adam, then
        # LBFGS: a PINN's second stage); a run with one class of optimizer does not repeat it
        stages = len({s["optimizer"] for s in steps if s.get("optimizer")}) > 1
        for k, s in enumerate(steps):
            entry = {"index": s.get("index", k), "wall_ms": s["wall_ms"], "phases": s["phases"],
                     "peak_memory_bytes": s["peak_memory_bytes"],
                     "detailed": s.get("detailed", True)}  # fmt: skip
            shape = self.input_shapes.get(entry["index"])
            if shape is not None:
                entry["input_shape"] = list(shape)
            modules = self.step_modules.get(entry["index"])
            if common is not None and modules is not None and list(modules) != common:
                entry["outer_modules"] = list(modules)
            if s.get("lines_cut"):
                entry["lines_cut"] = True
            for key in HOST_KEYS:  # (collect/host_time.py: where the thread's time went)
                if key in s:  # (minor_faults: a count)
                    entry[key] = s[key] if isinstance(s[key], int) else round(float(s[key]), 4)
            if s.get("update_ms"):  # the optimizers' own updates (after their closures)
                entry["update_ms"] = round(float(s["update_ms"]), 4)
            if s.get("closure"):  # (the step's optimizer.step() ran a closure first)
                entry["closure"] = True
            if stages and s.get("optimizer"):
                entry["optimizer"] = s["optimizer"]
            if s.get("padding") is not None:  # (the rows' lengths of the first steps only)
                entry["padding"] = resolve_padding(s["padding"], padded < PADDING_LENGTHS)
                padded += 1
            if s.get("model_calls"):  # outermost model calls, those in eval mode (an evaluation)
                entry["model_calls"] = int(s["model_calls"])
                if s.get("eval_calls"):
                    entry["eval_calls"] = int(s["eval_calls"])
            entries.append(entry)
        return entries

    def note_compile(self, index: int, ms: float) -> None:
        """Profiled step ``index`` spent ``ms`` in torch.compile (compiling or recompiling).

        Example:
            >>> state = ProfilerState()
            >>> state.note_compile(0, 800.0); state.note_compile(3, 650.0)
            >>> state.compile_steps, state.compile_ms
            ([(0, 800.0), (3, 650.0)], 1450.0)
        """
        self.compile_ms += ms
        self.compile_step_count += 1
        if len(self.compile_steps) < COMPILE_STEPS:
            self.compile_steps.append((index, ms))

    def count_lines(self, collector: Any) -> None:
        """Add a detailed step's hot-lines counts (read by the overhead estimate)."""
        if collector is not None:
            self.line_steps += 1
            self.line_calls_seen += collector.step_seen
            self.line_calls_timed += collector.step_timed
            self.line_calls_python += collector.step_seen_python
            self.line_own_ns += collector.step_own_ns

    @staticmethod
    def step_counts(collector: Any, audit_calls: int) -> dict[str, int]:
        """A detailed step's own counts, kept in its summary: the overhead estimate takes them
        from the steps the tree keeps (an evaluation's thousands of calls in one left-out
        step made a 20x estimate of the others).

        Example:
            >>> ProfilerState.step_counts(None, 12)
            {'audit_calls': 12}
        """
        counts = {"audit_calls": audit_calls}
        if collector is not None:
            counts.update(line_seen=collector.step_seen, line_timed=collector.step_timed,
                          line_python=collector.step_seen_python,
                          line_own_ns=collector.step_own_ns)  # fmt: skip
        return counts

    def drop_steps(self) -> None:
        """Forget the steps kept so far (they were partial: the boundary was revised)."""
        self.summaries.clear()
        self.timelines.clear()
        self.input_shapes.clear()  # (by step index: the steps are numbered anew)
        self.step_modules.clear()
        self._module_sets.clear()  # (the steps noted were cut at module calls: no common set
        self._usual.clear()  # of the steps kept now; A2C's boundary moved to optimizer.step())
        self.loader_starts.clear()  # (indices of the dropped steps)
        self.hook_ns = self.hook_calls = self.line_own_ns = 0  # (figures of the dropped steps)
        self.graph_hooks = 0
        self.line_steps = self.line_calls_seen = self.line_calls_timed = 0
        self.line_calls_python = 0
        self.first_detail_ns = None
        if self.compile_steps:  # (compiling in them happened: once, before the steps kept now)
            self.compile_steps = [(0, sum(ms for _, ms in self.compile_steps))]
            self.compile_step_count = 1

    def detailed_summaries(self) -> list[dict[str, Any]]:
        return [s for s in self.summaries if s.get("detailed", True)]


#: the ``step_boundary`` values a Profiler accepts
BOUNDARIES = ("manual", "auto", "step_fn")


def check_options(model: Any, step_boundary: str, warmup: int, max_steps: int | None) -> None:
    """Raise a clear error for a bad Profiler option (wrong model type, unknown boundary,
    negative warm-up).

    Example:
        >>> check_options(None, "sometimes", 0, None)
        Traceback (most recent call last):
        ...
        ValueError: step_boundary must be one of ('manual', 'auto', 'step_fn'), got 'sometimes'; use 'manual' with prof.step() in your loop, or 'auto' to detect steps
    """
    import torch

    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module or None, got {type(model).__name__}; "
            "pass the model whose submodules should be named, or None for all modules"
        )
    if step_boundary not in BOUNDARIES:
        raise ValueError(
            f"step_boundary must be one of {BOUNDARIES}, got {step_boundary!r}; use "
            "'manual' with prof.step() in your loop, or 'auto' to detect steps"
        )
    if warmup < 0 or (max_steps is not None and max_steps < 1):
        raise ValueError(
            f"warmup must be >= 0 and max_steps None or >= 1, got warmup={warmup}, "
            f"max_steps={max_steps}"
        )

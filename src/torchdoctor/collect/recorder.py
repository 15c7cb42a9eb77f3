"""The hot path of the profiler: what module hooks, regions and autograd hooks record.

A :class:`Recorder` owns one step's raw events (clock tokens, not yet resolved) and the node
registry (call-context tree: a node is a module path or region name *under its caller*, so a
module reused from two places appears under each, and inclusive times always nest).

Forward: the global forward pre-hook pushes a frame and a clock token; the forward hook (with
``always_call=True``, so the stack stays balanced when a forward raises) pops it and records
``(node, start, end)``.

Backward attribution (see ``collect/backward.py`` for the processing and the choice): per call,
a pre-hook on the ``grad_fn`` of each output that requires grad marks the *start* of the
module's backward (an output's gradient is complete), and one on the ``grad_fn`` of each input
that requires grad marks its *end* (the input's gradient is complete); a leaf input's is hooked
when the call returns (``collect/leaf_ends.py``). Graph pre-hooks die with the graph; a
kept graph (``retain_graph``) may fire old hooks later: marks of earlier steps' calls are dropped.
A call none of whose inputs require grad (the first layer, a module fed with data) has no end
mark; ``collect/backward.py`` ends it. Containers are extended to cover their children.
Regions record the autograd sequence numbers at enter and exit; when a backward pass starts,
:meth:`Recorder.hook_regions` finds the nodes made inside each region that the pass reaches and
hooks its outputs and inputs the same way (``collect/region_graph.py``).

Memory: a ``saved_tensors_hooks`` pack hook (returns the tensor itself: no copy) counts the
storage bytes each module's forward saves for backward, each storage once per step; parameters
and their views are not activations and are skipped.

Cost per module call (``benchmarks/profiler_overhead.py`` measures it): no walk over modules
or parameters (each node's are listed once, at its first call; a call compares their
``_version`` counters), one clock token per event; the hooks' own tensor reads run with
torch-function handling off (an active sync audit's mode does not see them). A *light* step's
hooks (``collect/schedule.py``) track the outermost call alone (phases, step boundaries).

Example:
    >>> from torchdoctor.collect.clocks import CpuClock
    >>> rec = Recorder(CpuClock())
    >>> rec.node_for(0, ("region", "x"), "x", "region", None, None, name="x")
    1
    >>> rec.name[1]
    'x'
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch.nn import Embedding, EmbeddingBag, MultiheadAttention
from torch.nn.modules.conv import _ConvNd

from torchdoctor.collect.attention_probe import note_attention_call
from torchdoctor.collect.compiled import DYNAMO_SKIPS, compiling
from torchdoctor.collect.conv_geometry import note_conv_call
from torchdoctor.collect.embedding_probe import note_embedding_call
from torchdoctor.collect.engine_state import AnomalyProbe, note_autocast
from torchdoctor.collect.fingerprint import SeenInputs, fingerprint, note_outputs
from torchdoctor.collect.leaf_ends import hook_leaf_ends
from torchdoctor.collect.naming import ModuleNames
from torchdoctor.collect.padding import PaddingProbe
from torchdoctor.collect.phases import PhaseMachine
from torchdoctor.collect.recorder_nodes import NodeRegistry, NodeStates
from torchdoctor.collect.recorder_regions import RegionEvents
from torchdoctor.collect.records import (
    RECOMPUTED,
    BackwardMark,
    Frame,
    MarkKind,
    fired_entries,
    first_kwarg_shape,
    tensors_in,
)  # fmt: skip
from torchdoctor.collect.saved_bytes import SavedBytes
from torchdoctor.collect.state import STATE
from torchdoctor.collect.syncs_frames import user_frame
from torchdoctor.collect.unused_outputs import unused_calls

Tensor = torch.Tensor
_host_ns = time.perf_counter_ns
_thread = threading.get_ident
_mode_enabled = torch._C._is_torch_function_mode_enabled
_NoTorchFunction = torch._C.DisableTorchFunction
_PASS_END = MarkKind.PASS_END
# (plain ints in the hooks' entries: a tuple of numbers is untracked by the collector)
_START, _END = int(MarkKind.START), int(MarkKind.END)
_new = tuple.__new__  # a record without its generated Python __new__ (hot path)
_NO_KWARGS: Any = object()  # post_hook's output, when torch calls it without keyword arguments

_EMBEDDINGS = (Embedding, EmbeddingBag)  # (their dense gradient: embedding_probe.py)


class Recorder(NodeRegistry, RegionEvents, SavedBytes):
    """Raw events of the running step plus the node registry shared by all steps.

    Example:
        >>> from torchdoctor.collect.clocks import CpuClock
        >>> rec, net, x = Recorder(CpuClock(), memory=False), torch.nn.Linear(2, 2), torch.ones(1, 2)
        >>> rec.new_step(rec.now())
        >>> rec.pre_hook(net, (x,))
        >>> rec.post_hook(net, (x,), net(x))
        >>> [(rec.path[call[0]], rec.kind[call[0]]) for call in rec.fwd]
        [('Linear', 'module')]
    """

    def __init__(self, clock: Any, *, backward: bool = True, memory: bool = True) -> None:
        self.clock, self.now, self._entries = clock, clock.now, fired_entries(self)
        self.backward, self.memory, self.muted = backward, memory, False  # (muted: a loader runs, compiled code)
        self.fingerprints_across_steps = False  # set by the profiler (see new_step)
        self.fingerprinting = True  # this step compares module inputs (set by the profiler)
        # engine knobs seen in use during the step (None: no evidence either way)
        self.knobs: dict[str, Any] = {"autocast": None, "channels_last": None,
                                      "gradient_graph": None, "double_backward": None}
        self.anomaly = AnomalyProbe()  # anomaly detection left on (engine_state.py)
        # the first input's shape at the step's first outermost call (steps cut at module
        # calls: an autoregressive loop's input grows by a token per step); None: not seen
        self.outer_shape: tuple[int, ...] | None = None
        self.conv_geometry: dict[int, dict | None] = {}  # node -> its padding (conv_geometry)
        # node -> an attention module's first call (attention_probe.py); node -> its module
        self.attention_calls: dict[int, dict | None] = {}
        self.attention_switches: dict[int, dict] = {}  # node -> its fused attention, off
        self.attention_pending: dict[int, Any] = {}
        # node -> a trained embedding's first call, its weight (embedding_probe.py)
        self.embedding_calls: dict[int, dict | None] = {}
        self.embedding_weights: dict[int, Any] = {}
        self.padding = PaddingProbe()  # the step's first padded token batch (padding.py)
        self.names = ModuleNames()  # (it lists the modules it named that were freed since)
        self.phases = PhaseMachine(self.now)
        self.node_ids: dict[tuple[int, Any], int] = {}  # (parent, id(module) | ("region", name))
        self.module_nodes: dict[int, int] = {}  # id(module) -> the node of its first call
        self.freed_keys: dict[int, int] = {}  # node -> the id its freed module had
        self.parent: list[int] = [-1]
        self.path: list[str] = [""]
        self.name: list[str] = ["step"]
        self.kind: list[str] = ["root"]
        self.type: list[str | None] = [None]
        self.source: list[dict | None] = [None]
        self.frames: list[Frame] = []
        self.module_depth = 0  # module calls open (regions excluded), light steps included
        self.serial = 0
        self.recording = True
        self.detailed = True  # False in a light step: module hooks record nothing but depth
        # host ns spent inside the detailed hooks this step (the overhead estimate's measured
        # part); on the CPU clock the event's own token doubles as one of the two readings
        self.hook_ns = 0
        self.host_clock = clock.now is time.perf_counter_ns
        self.state_of = NodeStates()  # node -> its module's state while it lives (_fingerprint)
        self.made_in_forward: set[int] = set()  # nodes of modules made inside a forward
        self.fingerprints = SeenInputs()  # the latest call of each (node, input signature)
        self.derived: dict[int, tuple] = {}  # id(output) -> (weak, description, anchor, version)
        self.on_outermost: Any = None  # called with the module and args before an outermost call
        # ... and whether a call of a module beginning now gets its post-hook (the hooks of the
        # step on_outermost may have begun: collect/module_hooks.py)
        self.hooks_end_of: Any = None
        # called with True when the innermost call becomes a library module's (no source, in
        # torch, a package, torchdoctor), False when the user's again, in detailed steps
        self.on_owner: Any = None
        self.owner_shadow = False  # ... and in light steps under compiled code (shadow_owner)
        self.library: list[bool] = [False]  # per node: a library module
        self.in_library = False
        self.call_site: dict[int, tuple[str, int, str]] = {}  # node -> (file, line, function)
        self.repeat_site: dict[int, tuple[str, int, str]] = {}  # ... of its first repeated call
        self.registration_ns = 0  # host ns registering nodes at their first call (once only)
        self._names_generation = 0  # ModuleNames.generation the node paths were read at
        self.compiled_module_seen = False  # a torch.compile'd module's wrapper was called
        self.compiled_inner: set[int] = set()  # ids of the modules such wrappers call: no node
        # calls are recorded on the thread that made it (the loop's); others only counted
        self.thread = _thread()
        self.other_thread_calls = 0
        self.count_memory = False
        self.backward_open: list[list[int]] = []  # per running backward pass: split frames
        self.new_step(self.now())

    # -- step buffers ---------------------------------------------------------------------
    def new_step(self, token: Any, light: bool = False) -> None:
        """Begin a step at ``token``. A ``light`` step records nothing but its phases: when the
        last step left nothing either, its buffers are reused as they are (empty)."""
        self.step_start = token
        self.anomaly.step_began()
        self.attention_pending.clear()  # (a call that raised: never read)
        self.hook_ns = 0
        self.first_serial = self.serial + 1  # marks of older calls (kept graphs) are dropped
        if light and not (
            self.fwd or self.bwd or self.fired or self.handles or self.hooked or self.act
            or self.fingerprints or self.identical or self.region_calls or self.seen_storages
            or self.no_grad_nodes
        ):  # fmt: skip
            self.phases.begin_step(token)
            return
        self.fwd: list[tuple] = []  # (node, start, end, piece): ForwardCall's fields
        self.bwd: list[BackwardMark] = []
        # graph pre-hooks fired: (the marks of every call hooked on the node, token)
        self.fired: list[tuple[list[tuple[int, int, MarkKind]], Any]] = []
        self.registered: list[list] = []  # every graph hook's marks (unused_outputs.py)
        self.handles: list[Any] = []
        self.leaves: dict[int, list[Tensor]] = {}  # serial -> its leaf inputs (leaf_ends.py)
        self.hooked: dict[Any, list[tuple[int, int, MarkKind]]] = {}  # grad_fn -> its marks
        self.act: dict[int, int] = defaultdict(int)
        self.seen_storages: set[int] = set()
        # Input fingerprints are per step, except when each step is one call of the outermost
        # module (an inference loop cut by `run`): a sampler re-encoding the same conditions at
        # every call is then seen across steps. Entries whose tensor died are dropped.
        across = self.fingerprints_across_steps
        self.fingerprints = self.fingerprints.carried() if across else SeenInputs()
        made = self.derived if self.fingerprints_across_steps else {}  # (outputs: kept alike)
        self.derived = {key: value for key, value in made.items() if value[0]() is not None}
        self.identical: dict[int, int] = defaultdict(int)
        # regions of this step not yet hooked for backward: (seq enter, seq exit, (node, serial))
        self.region_calls: list[tuple[int, int, tuple[int, int]]] = []
        # nodes called without grad in the forward (a reentrant checkpoint's, re-run in backward)
        self.no_grad_nodes: set[int] = set()
        self.phases.begin_step(token)

    def take_step(self, end_token: Any) -> tuple:
        """Detach the step's raw records (resolved later by :func:`resolve_records`, so a
        detailed step can wait to be summarized): ``(start token, end token, forward calls,
        backward marks, fired graph hooks, phase segments, first serial)``. The recorder
        goes on with empty buffers."""
        raw = (self.step_start, end_token, self.fwd, self.bwd, self.fired, self.phases.segments,
               self.first_serial)  # fmt: skip
        self.unused = unused_calls(self.registered, self.fired, self.first_serial)
        self.fwd, self.bwd, self.fired, self.registered = [], [], [], []
        self.anomaly.step_ended()
        return raw

    def release_handles(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    # -- module hooks (global) ------------------------------------------------------------
    def pre_hook(self, module: Any, args: Any) -> None:
        if compiling() or not self.recording or self.muted or id(module) in self.compiled_inner:
            return  # (Dynamo tracing, a compiled wrapper's own module: collect/compiled.py)
        if _thread() != self.thread:  # another thread's model (an evaluator, a prefetcher)
            self.other_thread_calls += 1
            return
        # outermost module call (regions around it do not count); a forward re-run inside a
        # backward pass (activation checkpointing) is none: no step begins there
        if not self.module_depth and self.phases.stack[-1][0] != "backward":
            if self.on_outermost is not None:
                self.on_outermost(module, args)  # may end the step: read `detailed` after it
                if self.hooks_end_of is not None and not self.hooks_end_of(module):
                    # the light step it began hooks other modules: no post-hook would close
                    # this call (seq2seq tutorial: the depth stuck at 1, no forward phase)
                    return
                if self.outer_shape is None and args and isinstance(args[0], Tensor):  # (input)
                    self.outer_shape = None if args[0].is_nested else tuple(args[0].shape)
                elif self.outer_shape is None and args and isinstance(args[0], Mapping):  # (a batch
                    self.outer_shape = first_kwarg_shape(args[0])  # dict: sentence-transformers)
            if self.detailed:
                self.anomaly.outermost()
            self.phases.enter_forward()
        self.module_depth += 1
        if self.module_depth <= 2 and not self.knobs["autocast"]:  # (also its direct children:
            note_autocast(self.knobs)  # accelerate enters autocast inside the model's forward)
        if not self.detailed:
            if self.owner_shadow and self.module_depth == 1:  # (compiled code: see the mixin)
                self.shadow_owner(module)
            return
        began = _host_ns()
        if _mode_enabled():  # a sync audit's mode must not intercept the hook's own reads
            with _NoTorchFunction():
                self._enter_call(module, args, began)
        else:
            self._enter_call(module, args, began)

    def _enter_call(self, module: Any, args: Any, began: int) -> None:
        frames = self.frames
        parent = frames[-1].node if frames else 0
        node = self.node_ids.get((parent, id(module)))
        if node is None:
            node = self._module_node(parent, module)
        if self.anomaly.probing:  # (anomaly detection on: the depth its stack records walk)
            self.anomaly.sample(sys._getframe(1))  # (at the depth of the forward)
        if isinstance(module, _ConvNd):  # (the channels_last knob; its padding, once)
            note_conv_call(self, node, module, args)
        elif isinstance(module, MultiheadAttention) and node not in self.attention_calls:
            self.attention_pending[node] = module  # (read when it returns: its kwargs)
        elif isinstance(module, _EMBEDDINGS):  # (its first call, and its calls in that step)
            note_embedding_call(self, node, module, args)
        serial = self.serial = self.serial + 1
        STATE.module_stack.append(self.path[node])
        if node not in self.call_site:  # where the module is called from: first call only
            self.call_site[node] = user_frame(sys._getframe(2))
        if self.backward:
            grad = torch.is_grad_enabled()
            if self.phases.stack[-1][0] != "backward":
                if grad and args:
                    self._hook(tensors_in(args), node, serial, _END)
                elif not grad:
                    self.no_grad_nodes.add(node)
            elif grad and node in self.no_grad_nodes:  # a reentrant checkpoint's recompute:
                self._mark(node, serial, _START)  # its forward hooked nothing; backward starts
        if self.library[node] is not self.in_library:
            self._owner_became(self.library[node])
        token = self.now()
        self.hook_ns += (token if self.host_clock else _host_ns()) - began
        frames.append(_new(Frame, (node, id(module), serial, token)))

    def post_hook(self, module: Any, args: Any, kwargs: Any, output: Any = _NO_KWARGS) -> None:
        """The global forward hook (registered ``with_kwargs``; torch leaves the keyword
        arguments out when it runs the hook after a forward that raised)."""
        if output is _NO_KWARGS:
            output, kwargs = kwargs, None
        if compiling() or _thread() != self.thread or id(module) in self.compiled_inner:
            return
        if kwargs and self.module_depth == 1 and self.outer_shape is None:
            self.outer_shape = first_kwarg_shape(kwargs)  # model(input_ids=ids): the step's input
        frames = self.frames
        if not frames or frames[-1].module_id != id(module):
            if self.recording and self.module_depth:  # a call begun in a light step
                self.module_depth -= 1
                if not self.module_depth and self.in_library:  # (owner_shadow's)
                    self._owner_became(False)
                if not self.module_depth and not torch.is_grad_enabled():
                    self.phases.leave_forward_without_grad()
            return
        end = self.now()
        node, _, serial, start = frames.pop()
        self.module_depth -= 1
        began = end if self.host_clock else _host_ns()
        if STATE.module_stack:
            STATE.module_stack.pop()
        forward = self.phases.stack[-1][0] != "backward"
        # a forward re-run inside backward (activation checkpointing): its time is part of the
        # backward already measured, counted apart as the recomputation's, not as forward
        # (an exact tuple of numbers: untracked by the collector, collect/garbage.py)
        self.fwd.append((node, start, end, False if forward else RECOMPUTED))
        if _mode_enabled():  # a sync audit's mode must not intercept the hook's own reads
            with _NoTorchFunction():
                self._after_call(node, serial, args, kwargs, output, forward, module)
        else:
            self._after_call(node, serial, args, kwargs, output, forward, module)
        library = self.library[frames[-1][0]] if frames else False
        if library is not self.in_library:
            self._owner_became(library)
        if not self.module_depth:
            self.hooked = {}  # the graph is the caller's again: hold no node of it
            if not torch.is_grad_enabled():
                self.phases.leave_forward_without_grad()
        self.hook_ns += _host_ns() - began

    def _after_call(
        self, node: int, serial: int, args: Any, kwargs: Any, output: Any, forward: bool,
        module: Any,
    ) -> None:
        """When the call returned (its keyword arguments are known then): its inputs compared
        with earlier calls', the end of its backward marked on its keyword tensors (the
        positional ones were hooked before the call) and the start on its outputs; the step's
        first padded token batch measured."""
        grad = torch.is_grad_enabled()
        if self.padding.wanted and forward:
            self.padding.note(module, args, kwargs)
        if self.attention_pending and node in self.attention_pending:
            note_attention_call(self, node, args, kwargs)
        if forward and (args or kwargs):
            if self.fingerprinting and node not in self.made_in_forward:
                self._fingerprint(node, args, kwargs, module.training, output)  # (a new module: new)
            if kwargs and self.backward and grad:
                self._hook(tensors_in(kwargs), node, serial, _END)
        if self.leaves:  # (leaf inputs: the end of the call's backward, leaf_ends.py)
            hook_leaf_ends(self, node, serial, output)
        if self.backward and output is not None and grad:
            self._hook(tensors_in(output), node, serial, _START)

    def _fingerprint(self, node: int, args: Any, kwargs: Any, training: bool, output: Any) -> None:
        try:
            key = fingerprint(args, kwargs, self.derived)
        except Exception:  # a tensor subclass whose data pointer or version raises
            key = None
        if key is None:
            return
        # Same inputs but updated parameters (an optimizer step, LBFGS, a manual SGD update), a
        # module that wrote its own buffers (BatchNorm in training), the other train/eval mode
        # (dropout) or a graph built after a call that built none (GAT's evaluation): new work.
        grad, signature, anchor = torch.is_grad_enabled(), (key[0], training), key[1]
        weights = sum([p._version for p in self.state_of.get(node, ())])  # (they only grow)
        if output is not None and not grad:  # (its outputs, described by this call)
            note_outputs(self.derived, node, (signature, weights), anchor, output)
        if self.fingerprints.again(node, signature, anchor, weights, grad):
            self.identical[node] += 1
            if node not in self.repeat_site:  # (the call to drop: its caller's line)
                self.repeat_site[node] = user_frame(sys._getframe())

    # -- backward attribution -------------------------------------------------------------
    def _mark(self, node: int, serial: int, kind: MarkKind, *_: Any) -> None:
        self.bwd.append(BackwardMark(node, serial, kind, self.now()))

    def _mark_once(self, fired: list[bool], node: int, serial: int, kind: int, *_: Any) -> None:
        # a leaf's tensor hook stays until the step ends, so with gradient accumulation it
        # fires again in the later micro-steps' passes: only the first is this call's
        if not fired[0]:
            fired[0] = True
            self._mark(node, serial, kind)

    def end_backward_pass(self) -> None:
        """A backward pass returned: ends the calls whose inputs needed no grad. Calls made
        with grad enabled before it are no longer reusable (their graph was consumed: the
        micro-steps of gradient accumulation each re-run a weight parametrization or a module
        on learned queries, and must), so a later call with their inputs is no recomputation."""
        self.bwd.append(BackwardMark(0, 0, _PASS_END, self.now()))
        self.fingerprints.graphs_consumed()

    def gradients_launched(self) -> None:
        """DDP launched a gradient bucket's all-reduce (``collect/collectives_ddp.py``): mark
        it (``MarkKind.COMPUTED``) in detailed steps with backward attribution."""
        if self.detailed and self.backward and self.recording:
            self.bwd.append(BackwardMark(0, 0, MarkKind.COMPUTED, self.now()))

    def _hook(self, tensors: list[Tensor], node: int, serial: int, kind: MarkKind) -> None:
        """Mark ``kind`` for call ``serial`` of ``node`` when the gradient of any of
        ``tensors`` is complete.

        A pre-hook on the tensor's ``grad_fn`` (cheap, C++; it dies with the graph) fires when
        the gradient is complete, just before the node that produced the tensor runs. One hook
        per ``grad_fn`` serves every call that needs it (a module's output is its container's
        output and the next module's input): the marks of all of them are appended when it
        fires, with one clock read. A leaf input (no ``grad_fn``) waits for the call's end
        (``leaf_ends.py``); a leaf output gets a tensor hook, removed at the step's end.
        """
        hooked = self.hooked
        entry = (node, serial, kind)
        for tensor in tensors:
            if not tensor.requires_grad:
                continue
            grad_fn = tensor.grad_fn
            try:
                if grad_fn is None and kind == _END:  # (hooked when the call returns)
                    self.leaves.setdefault(serial, []).append(tensor)
                    continue
                if grad_fn is None:  # (fires in every later pass of the step: first only)
                    mark = partial(self._mark_once, [False], node, serial, kind)
                    self.handles.append(tensor.register_hook(mark))
                    continue
                entries = hooked.get(grad_fn)
                if entries is None:  # (the list is the hook: one object, no partial)
                    entries = hooked[grad_fn] = self._entries((entry,))
                    grad_fn.register_prehook(entries)
                    self.registered.append(entries)
                elif entries[-1] != entry:
                    entries.append(entry)
            except RuntimeError:  # e.g. a tensor subclass refusing hooks: leave it unmarked
                continue


DYNAMO_SKIPS.extend((Recorder.pre_hook, Recorder.post_hook))  # (collect/compiled.py)

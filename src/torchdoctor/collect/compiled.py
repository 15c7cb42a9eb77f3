"""The profiler under ``torch.compile``: its hooks and modes step aside while Dynamo traces.

Dynamo traces a compiled function's Python, and with it every global module hook, torch
function mode and wrapper the profiler installs. Traced, they would turn the profiler's own
bookkeeping into graph code and guards (a guard on a dict keyed by code objects cannot even be
built: Dynamo raises, and the user's script dies). So each entry point begins with
:func:`compiling` (Dynamo answers True while it traces, False at run time and in eager code)
and does nothing then: the compiled region runs as one call, timed by the eager hooks around it
(its module is the ``OptimizedModule``; the hot lines charge its time to the line that called
it).

Called as frames of their own, though, Dynamo would compile them: ``module.compile()``
compiles ``_call_impl``, whose hooks it then compiled as no-ops guarded on their arguments (the
model left the tree; recompiled call after call), and a ``torch.compile``'d model's wrapper
calls its module through them. So the entry points are marked for Dynamo to skip, with all they
call (:func:`keep_out_of_dynamo`, at start and after every ``torch.compile``): they run as
plain Python, and the wrapper's own call of its module makes no node
(``Recorder.compiled_inner``: its time is the ``OptimizedModule``'s).

Dynamo also guards the compiled code on the global module hooks and the torch function mode
stack. Toggling them between detail windows and light steps would recompile the user's code
at every window, and after a few recompilations Dynamo falls back to eager. Once compiled code
runs under a profiler (Dynamo compiled a frame since the profiler started, :func:`compiled_frames`,
or its hooks saw a compiled module's ``OptimizedModule`` wrapper), the profiler leaves its hooks
in place across steps, light steps keep the sync audit's mode on the stack (passing calls
through: ``SyncAudit.pause(in_place=True)``), and the hot-lines mode is parked and put back in
light steps at the same phase changes and library calls as in detailed ones (passing calls
through: ``ModeParking.pause(shadow=True)``; the outermost call's owner is tracked for it,
``RegionEvents.shadow_owner``): compiled code sees one mode stack in every step. Dynamo also
guards on the keys of torch's global hooks dict, so while a data loader yields, the module
hooks are muted in place (``Recorder.muted``) instead of taken off and registered again (new
keys: Hugging Face's Trainer with ``torch_compile=True`` recompiled its model at every step). (Before,
nanoGPT with ``compile=True`` recompiled its model at the first light step and at each later
switch, and the report blamed its input shapes: "recompiles in 2 later steps, 56% of the run".)

Example:
    >>> compiling()
    False
    >>> compiled_frames() >= 0
    True
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import torch
from torch.compiler import is_compiling as compiling

__all__ = ["call_as_written", "compiling", "compile_seconds", "compiled_frames", "is_compiled_module",
           "keep_out_of_dynamo", "restore_dynamo", "watch_compile"]


def _from_dynamo(read: Any) -> float:
    """``read(torch._dynamo.utils)``, or 0 when Dynamo was never imported (this does not
    import it) or its counters differ in this torch (nothing to compare)."""
    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:
        return 0
    try:
        return read(utils)
    except Exception:
        return 0


def compiled_frames() -> int:
    """Frames Dynamo has compiled in this process so far (0 when it was never imported).

    Example:
        >>> compiled_frames() >= 0
        True
    """
    return int(_from_dynamo(lambda utils: utils.counters["frames"]["total"]))


#: Dynamo's timers of a compilation (its own metrics; names of torch 2.13): a frame traced and
#: compiled (forward), and the backward graph compiled lazily at the first backward
_COMPILE_TIMERS = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")


def compile_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process so far, forward frames and
    backward graphs (0 when Dynamo was never imported). Read at step boundaries, its growth is
    the compilation inside a step.

    Example:
        >>> compile_seconds() >= 0.0
        True
    """
    return float(
        _from_dynamo(
            lambda utils: sum(
                sum(utils.compilation_time_metrics.get(name) or ()) for name in _COMPILE_TIMERS
            )
        )
    )


def is_compiled_module(module: object) -> bool:
    """Whether ``module`` is the wrapper ``torch.compile(module)`` returns.

    Example:
        >>> import torch
        >>> is_compiled_module(torch.nn.Linear(1, 1))
        False
    """
    cls = type(module)
    return cls.__name__ == "OptimizedModule" and cls.__module__.startswith("torch._dynamo")


def call_as_written(func: Any, args: tuple, kwargs: Any) -> Any:
    """Run a call a torch function mode received while Dynamo traces (where the modes could not
    be hidden from it: :func:`_hide_modes_from_dynamo`), so that the graph stays cacheable: a
    tensor method as a method call (``x.split(2)``), anything else as the function it is
    (``x + y`` then reads ``x.add(y)``: the mode receives the method). Dynamo inlines each
    mode's ``__torch_function__``; calling the handler's ``func`` (the function ``torch.Tensor.split`` for ``x.split(2)``) put a function
    node in the graph where the plain trace has a method node, and AOTAutograd's cache refuses
    graphs holding torch's Python-level tensor methods as functions: every run of a compiled
    model under the profiler compiled it again from scratch (a warm-cache first step 2.6 s
    plain, 4.2-6.2 s profiled; BENCHMARKS.md "Thirty-fifth session").

    Example:
        >>> import torch
        >>> call_as_written(torch.Tensor.split, (torch.arange(4), 2), None)[1].tolist()
        [2, 3]
        >>> call_as_written(torch.add, (torch.ones(1), 1), {}).item()
        2.0
        >>> call_as_written(torch.Tensor.__rsub__, (torch.ones(1), 3), None).item()
        2.0
    """
    kwargs = kwargs or {}
    name = getattr(func, "__name__", None)
    if (name is not None and args and isinstance(args[0], torch.Tensor)
            and getattr(type(args[0]), name, None) is func):
        return getattr(args[0], name)(*args[1:], **kwargs)
    return func(*args, **kwargs)


#: the profiler's functions that the user's compiled code calls (the global module hooks, the
#: torch function modes' handlers): each module appends its own
DYNAMO_SKIPS: list[Any] = []

#: the profiler's torch function mode classes (each module appends its own): Dynamo traces as if
#: they were not on the stack (:func:`_hide_modes_from_dynamo`)
PROFILER_MODES: list[type] = []


def keep_out_of_dynamo() -> bool:
    """Tell Dynamo to run the profiler's entry points as they are: never compile one as a frame
    of its own, nor anything it calls (True when done; False when Dynamo is not imported or
    this torch has no per-code strategy). Inside a traced function they are still traced (and
    do nothing: :func:`compiling`); but ``module.compile()`` compiles ``_call_impl``, whose
    hooks and modes Dynamo then compiled as frames of their own, as no-ops: the tree lost the
    model, and their guards (the number of arguments, an output's shape, grad mode) recompiled
    them call after call (9 recompiles of a 3-layer MLP where the plain run had none).

    Example:
        >>> keep_out_of_dynamo() in (True, False)
        True
    """
    if "torch._dynamo" not in sys.modules:
        return False
    try:
        from torch._C._dynamo import eval_frame

        action, strategy = eval_frame._FrameAction, eval_frame._FrameExecStrategy
        set_strategy = eval_frame.set_code_exec_strategy
    except (ImportError, AttributeError):  # (another torch: its frames as before)
        return False
    for function in DYNAMO_SKIPS:
        set_strategy(function.__code__, strategy(action.SKIP, action.SKIP))
    _out_of_graph_traces()
    _hide_modes_from_dynamo()
    return True


_HIDDEN_FROM_DYNAMO: list[Any] = []  # the undo of _hide_modes_from_dynamo, while it holds


def _hide_modes_from_dynamo() -> None:
    """Let Dynamo trace as if the profiler's modes were not on the stack (they stay on it, and in
    the guards Dynamo writes). Dynamo inlines every mode's handler for every op it traces: with
    the sync audit's and the hot lines' modes, tracing a 6-layer GPT took 1.35 s of CPU against
    0.6 s plain, and a handler, however transparent, can change the graph (see
    :func:`call_as_written`). Dynamo builds its view of the mode stack per traced frame
    (``SymbolicTorchFunctionState``); the profiler's modes are left out of it. If the traced code
    changes the mode stack itself (``with torch.device(...)``, a mode entered inside), Dynamo
    writes the stack back from its view at the end of the graph: the profiler's modes go back
    into that view first, where they were. Private Dynamo classes: on a torch without them,
    nothing changes (the handlers are inlined, as before). Undone by :func:`restore_dynamo`."""
    if _HIDDEN_FROM_DYNAMO:
        return
    try:
        from torch._dynamo.variables import torch_function as dynamo_tf

        state_class = dynamo_tf.SymbolicTorchFunctionState
        stack_class = dynamo_tf.TorchFunctionModeStackVariable
        original_init = state_class.__dict__["__init__"]
        original_register = stack_class.__dict__["register_mutation"]
        register = original_register.__func__
    except (ImportError, AttributeError, KeyError):
        return

    def init(self: Any, py_stack: Any, *args: Any, **kwargs: Any) -> None:
        py_stack = list(py_stack)
        original_init(self, py_stack, *args, **kwargs)
        ours = tuple(PROFILER_MODES)
        views = list(self.mode_stack)
        if not ours or len(views) != len(py_stack):
            return
        hidden = [(i, view) for i, (mode, view) in enumerate(zip(py_stack, views))
                  if isinstance(mode, ours)]
        if hidden:
            kept = {i for i, _ in hidden}
            self.mode_stack.clear()
            self.mode_stack.extend(v for i, v in enumerate(views) if i not in kept)
            self._torchdoctor_hidden = hidden

    def register_mutation(cls: Any, tx: Any) -> Any:
        state = tx.symbolic_torch_function_state
        hidden = getattr(state, "_torchdoctor_hidden", None)
        if hidden:
            state._torchdoctor_hidden = None
            for i, view in hidden:  # (ascending: each goes back where it was)
                state.mode_stack.insert(i, view)
        return register(cls, tx)

    state_class.__init__ = init
    stack_class.register_mutation = classmethod(register_mutation)

    def undo() -> None:
        if state_class.__dict__.get("__init__") is init:
            state_class.__init__ = original_init
        stack_class.register_mutation = original_register

    _HIDDEN_FROM_DYNAMO.append(undo)


def restore_dynamo() -> None:
    """Give Dynamo back its own view of the mode stack (see :func:`_hide_modes_from_dynamo`).

    Example:
        >>> restore_dynamo()
    """
    while _HIDDEN_FROM_DYNAMO:
        _HIDDEN_FROM_DYNAMO.pop()()


def _out_of_graph_traces() -> None:
    """Leave the profiler's files out of the source lines Dynamo writes on graph nodes: Dynamo
    inlines the modes' handlers, so each node's innermost frame was the handler's
    (``# File: .../collect/compiled.py in call_as_written``), not the user's line, in
    ``TORCH_LOGS=graph_code``, inductor's output code and compile errors. Dynamo skips the
    files in ``uninteresting_files()`` (its own polyfills); the profiler's join them (a private
    set: on a torch without it, the frames stay)."""
    try:
        from torch.fx.experimental.symbolic_shapes import uninteresting_files

        files = uninteresting_files()
        files.add(__file__)
        files.update(function.__code__.co_filename for function in DYNAMO_SKIPS)
    except (ImportError, AttributeError, TypeError):
        pass


def watch_compile() -> Any:
    """Keep the entry points out of Dynamo now if it is imported, and at every
    ``torch.compile`` call while the profiler runs (``module.compile()`` calls it too, and
    ``torch._dynamo.reset()`` forgets what Dynamo was told); returns the undo.

    Example:
        >>> import torch
        >>> undo = watch_compile(); patched = torch.compile.__wrapped__; undo()
        >>> patched is torch.compile
        True
    """
    import torch

    keep_out_of_dynamo()
    original = torch.compile

    @functools.wraps(original)
    def compile(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)  # (imports Dynamo the first time)
        keep_out_of_dynamo()
        return result

    torch.compile = compile

    def undo() -> None:
        if torch.compile is compile:
            torch.compile = original
        restore_dynamo()

    return undo

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

from torch.compiler import is_compiling as compiling

__all__ = ["compiling", "compile_seconds", "compiled_frames", "is_compiled_module",
           "keep_out_of_dynamo", "watch_compile"]


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


#: the profiler's functions that the user's compiled code calls (the global module hooks, the
#: torch function modes' handlers): each module appends its own
DYNAMO_SKIPS: list[Any] = []


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
    return True


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

    return undo

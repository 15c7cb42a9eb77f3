"""The profiler under ``torch.compile``: its hooks and modes step aside while Dynamo traces.

Dynamo traces a compiled function's Python, and with it every global module hook, torch
function mode and wrapper the profiler installs. Traced, they would turn the profiler's own
bookkeeping into graph code and guards (a guard on a dict keyed by code objects cannot even be
built: Dynamo raises, and the user's script dies). So each entry point begins with
:func:`compiling` (Dynamo answers True while it traces, False at run time and in eager code)
and does nothing then: the compiled region runs as one call, timed by the eager hooks around it
(its module is the ``OptimizedModule``; the hot lines charge its time to the line that called
it).

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

import sys
from typing import Any

from torch.compiler import is_compiling as compiling

__all__ = ["compiling", "compile_seconds", "compiled_frames", "is_compiled_module"]


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

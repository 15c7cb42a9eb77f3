"""Which device a profiler times, and the switch to CUDA events once a script has used CUDA.

``Profiler(model)`` knows its device from the model's parameters. ``torchdoctor run`` starts
profiling before the script has built anything: CUDA is not initialized yet, so the profiler
begins with the host clock. On a machine with a GPU, :func:`adopt_cuda_clock` is called at each
step boundary until the script has initialized CUDA; from then on every step is timed with CUDA
events on the script's current device (host time would only see kernel launches). The steps
before the switch (the warm-up, usually) keep their host times; ``config.notes`` says so.

Example:
    >>> device_of(None) in ("cpu", "cuda:0")
    True
"""

from __future__ import annotations

from typing import Any

import torch

from torchdoctor.collect.clocks import CpuClock, make_clock
from torchdoctor.collect.memory import PeakMemory


def device_of(model: Any) -> str:
    """The device of the model's first parameter (or buffer); without a model the current CUDA
    device when the process already initialized CUDA, else ``"cpu"``.

    Example:
        >>> device_of(torch.nn.Linear(2, 2))
        'cpu'
    """
    if model is not None:
        for tensor in model.parameters():
            return str(tensor.device)
        for tensor in model.buffers():
            return str(tensor.device)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def may_adopt_cuda_clock(model: Any, clock: Any) -> bool:
    """Whether a profiler should watch for the script's first use of CUDA (no model given,
    a host clock, a CUDA device present).

    Example:
        >>> may_adopt_cuda_clock(torch.nn.Linear(2, 2), CpuClock())
        False
    """
    return model is None and isinstance(clock, CpuClock) and torch.cuda.is_available()


def adopt_cuda_clock(profiler: Any) -> bool:
    """At a step boundary: once CUDA is initialized, time the next steps with CUDA events on the
    current device (recorder, hot lines, peak memory, the session's device). True on a switch.

    Example:
        >>> class P: pass
        >>> adopt_cuda_clock(P()) if not torch.cuda.is_initialized() else False
        False
    """
    if not torch.cuda.is_initialized():
        return False
    device = f"cuda:{torch.cuda.current_device()}"
    clock = make_clock(device)
    profiler._clock = clock
    rec = profiler._rec
    rec.clock, rec.now, rec.host_clock = clock, clock.now, False
    lines = getattr(profiler, "_lines", None)
    if lines is not None:
        lines.use_clock(clock)
    profiler._meter = PeakMemory(device)
    state = profiler.state
    state.device = profiler.device = device
    state.timing = clock.name
    state.notes.append(
        f"steps are timed with CUDA events on {device} from the first step boundary after the "
        "script initialized CUDA (host time before)"
    )
    return True

"""One timed collective call (:class:`Call`), the payload size and the clock stamps it uses.

Shared by the API wrappers (``collectives``) and DDP's bucket hook (``collectives_ddp``).

Example:
    >>> payload_bytes([torch.zeros(2)])
    8
"""

from __future__ import annotations

import time
from typing import Any

import torch

from torchdoctor.collect.state import STATE


def payload_bytes(values: Any) -> int | None:
    """Bytes of the largest tensor argument (a list of tensors counts as their sum).

    Example:
        >>> payload_bytes([torch.zeros(4), [torch.zeros(2), torch.zeros(2)], 3])
        16
        >>> payload_bytes(["not a tensor"]) is None
        True
    """
    best = None
    for value in values:
        if isinstance(value, torch.Tensor):
            size = value.numel() * value.element_size()
        elif isinstance(value, list | tuple) and value and isinstance(value[0], torch.Tensor):
            size = sum(t.numel() * t.element_size() for t in value if isinstance(t, torch.Tensor))
        else:
            continue
        best = size if best is None else max(best, size)
    return best


class Call:
    """One timed collective. Times are ns (``perf_counter_ns``) or CUDA events until resolved.

    Example:
        >>> call = Call("all_reduce", ("train.py", 3, "step"), "default", False, 4, seq=0)
        >>> call.kind, call.phase, call.end is None
        ('all_reduce', 'other', True)
    """

    __slots__ = ("kind", "site", "group", "is_async", "bytes", "step", "phase", "arrival_ns",
                 "start", "end", "exposed_ns", "seq", "ddp", "module")  # fmt: skip

    def __init__(self, kind: str, site: tuple, group: str, is_async: bool, nbytes: int | None,
                 seq: int, ddp: bool = False) -> None:  # fmt: skip
        self.kind, self.site, self.group, self.is_async = kind, site, group, is_async
        self.bytes, self.seq, self.ddp = nbytes, seq, ddp
        self.step, self.phase = STATE.step_index, STATE.phase
        # the module whose forward is running (FSDP all-gathers its parameters there)
        self.module = STATE.module_stack[-1] if STATE.module_stack else None
        self.arrival_ns = time.time_ns()
        self.start: Any = None
        self.end: Any = None
        self.exposed_ns = 0


def stamp(cuda: bool) -> Any:
    """A time stamp: a recorded CUDA event for device collectives, else ``perf_counter_ns``.

    Example:
        >>> isinstance(stamp(False), int)
        True
    """
    if cuda:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter_ns()

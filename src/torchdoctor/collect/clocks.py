"""Clocks for the profiler: host nanoseconds on CPU, CUDA events resolved in batches on GPU.

A clock hands out cheap *tokens* on the hot path (``clock.now()``) and turns a whole step's
tokens into nanoseconds at once (``clock.resolve(tokens)``). On CPU a token already is a
``time.perf_counter_ns()`` reading. On CUDA a token is an event recorded on the current stream;
``resolve`` waits once for the device (the tokens may come from several streams, and are not
passed in the order they were recorded: a step's end comes before its phase changes) and reads
every event's time relative to a reference event, so no hook ever synchronizes (the mistake
behind trees that add up to 724%). Steps are resolved in batches (``collect/step_queue.py``):
the wait happens once per batch, not at every step.
The CUDA path is written device-agnostically but has not been run on a GPU in this project's CI.

Example:
    >>> clock = make_clock("cpu")
    >>> a = clock.now(); b = clock.now()
    >>> ns = clock.resolve([a, b])
    >>> ns[1] >= ns[0]
    True
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


class CpuClock:
    """Host wall clock in integer nanoseconds (``time.perf_counter_ns``).

    Example:
        >>> CpuClock().resolve([5, 7])
        [5.0, 7.0]
    """

    name = "perf_counter"

    def __init__(self) -> None:
        self.now = time.perf_counter_ns

    def resolve(self, tokens: Sequence[Any]) -> list[float]:
        return [float(t) for t in tokens]


class CudaEventClock:
    """CUDA events recorded on the current stream, resolved in one call per batch of steps.

    Example (needs a GPU):
        >>> import torch
        >>> if torch.cuda.is_available():
        ...     clock = CudaEventClock()
        ...     _ = clock.resolve([clock.now()])
    """

    name = "cuda_events"

    def __init__(self) -> None:
        import torch

        self._synchronize = torch.cuda.synchronize
        self._event = torch.cuda.Event
        self._reference = torch.cuda.Event(enable_timing=True)
        self._reference.record()
        self._reference_ns = time.perf_counter_ns()

    def now(self) -> Any:
        event = self._event(enable_timing=True)
        event.record()
        return event

    def resolve(self, tokens: Sequence[Any]) -> list[float]:
        if not tokens:
            return []
        self._synchronize()  # the one host wait per resolve: every token is complete after it
        reference = self._reference
        base = float(self._reference_ns)
        return [base + reference.elapsed_time(t) * 1e6 for t in tokens]


def make_clock(device: str | None = None) -> CpuClock | CudaEventClock:
    """The clock for a device: CUDA events when the device is CUDA, host time otherwise.

    Example:
        >>> make_clock("cpu").name
        'perf_counter'
    """
    if device is not None and str(device).startswith("cuda"):
        return CudaEventClock()
    return CpuClock()

"""Garbage-collector time during a profiled run, split by light and detailed steps.

Detailed steps allocate more Python objects (events, hook closures), so Python's collector
runs more often in them; that time is the profiler's cost too, yet no hook sees it. A
``gc.callbacks`` entry times each collection (two clock readings per collection, nothing per
step) and charges it to the kind of step running; the session's estimate counts the detailed
steps' excess over the light steps' rate (``collect/profiler_overhead.py``).

Example:
    >>> import gc
    >>> timer = GcTimer()
    >>> remove = timer.install(); _ = gc.collect(); remove()
    >>> timer.ns[0] > 0, timer.ns[1]
    (True, 0)
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any


class GcTimer:
    """Accumulates collection time into ``ns[detailed]`` (``detailed``: set by the profiler at
    each step's start).

    Example:
        >>> timer = GcTimer()
        >>> timer.detailed = True
        >>> remove = timer.install(); _ = gc.collect(); remove(); remove()
        >>> timer.ns[1] > 0
        True
    """

    def __init__(self, ns: list[int] | None = None) -> None:
        self.ns = ns if ns is not None else [0, 0]  # light, detailed
        self.detailed = False
        self._began = 0

    def install(self) -> Callable[[], None]:
        """Start timing collections; returns :meth:`remove`."""
        if self._event not in gc.callbacks:
            gc.callbacks.append(self._event)
        return self.remove

    def remove(self) -> None:
        if self._event in gc.callbacks:
            gc.callbacks.remove(self._event)

    def _event(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter_ns()
        elif self._began:
            self.ns[self.detailed] += time.perf_counter_ns() - self._began
            self._began = 0

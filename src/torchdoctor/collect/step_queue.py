"""Steps waiting to be summarized: raw clock tokens now, summaries in batches.

At a step boundary the profiler only detaches the step's raw records (clock tokens, the
recorder's call and mark lists, the hot-lines collector's events). Turning them into a
summary (resolving the tokens, the module tree's intervals, the line table, the step store's
streams) is done for a batch at once: when :data:`BATCH` steps wait, when the oldest has
waited :data:`MAX_AGE_S` (a step that itself took that long is summarized at once), and
whenever figures are read (``Profiler.flush_steps()``: the live view, a snapshot, a
checkpoint, the end of the run, a change of clock).
Steps are summarized in order, so the store keeps its order and a line's backward per call
carries from one table to the next.

Why (measured, BENCHMARKS.md):

- light steps: summarizing one right after the model's compute pays a cache miss on every line
  of the bookkeeping; with the batch (and no peak-RSS read on CPU) a light step's cost on the
  small GPT fell from about 98 us to 50 us over the plain step;
- on CUDA, resolving a step's events waits for the device to finish that step; a batch waits
  once, so neither light nor detailed steps add a device wait of their own (a per-step wait
  stops the host from queueing the next step's kernels ahead);
- a detailed step's summary costs about the same batched or not on CPU (its records are cold
  either way: the line table 182 us, the summary 112 us on the small GPT); it waits for the
  device's sake and to keep the steps in one order.

Example:
    >>> from torchdoctor.collect.clocks import CpuClock
    >>> from torchdoctor.collect.step_queue import StepQueue
    >>> from torchdoctor.collect.step_store import StepStore
    >>> queue, store = StepQueue(), StepStore()
    >>> queue.add_light(0, 2_000_000, [(0, "forward"), (1_500_000, "backward")], None, True)
    False
    >>> queue.add_detailed(lambda: {"wall_ms": 3.0, "phases": {}, "detailed": True})
    False
    >>> len(queue), store.count
    (2, 0)
    >>> queue.flush(CpuClock(), store)
    >>> len(queue), [(s["wall_ms"], s["detailed"]) for s in store]
    (0, [(2.0, False), (3.0, True)])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from torchdoctor.collect.aggregate import light_step

#: steps summarized together (at most this many wait)
BATCH = 32
#: ... and none waits longer than this (seconds): what the live view and checkpoints lag by
MAX_AGE_S = 0.5

Light = tuple[Any, Any, Sequence[tuple[Any, str]], "int | None", bool, "dict[str, float] | None"]
Detailed = tuple[Callable[[], dict[str, Any]], "dict[str, float] | None"]


class StepQueue:
    """Steps waiting to be summarized, in order: a light one as ``(start, end, segments, peak,
    audited, host)`` tokens, a detailed one as the function that summarizes it and its
    ``host`` (``collect/host_time.py``: the thread's ``cpu_ms``/``cpu_wait_ms``, added to
    the summary).

    Example:
        >>> queue = StepQueue(batch=2)
        >>> queue.add_light(0, 1, [(0, "other")], None, True), queue.add_light(1, 2, [(1, "other")], None, True)
        (False, True)
    """

    def __init__(self, batch: int = BATCH, max_age_s: float = MAX_AGE_S) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1 step, got {batch}")
        self.batch = batch
        self.max_age_s = max_age_s
        self._steps: list[Light | Detailed] = []
        self._since = 0.0  # time.monotonic() when the oldest waiting step was added
        self._last: float | None = None  # ... when the last step was added (None: none yet)

    def __len__(self) -> int:
        return len(self._steps)

    def _added(self) -> bool:
        now = time.monotonic()
        if len(self._steps) == 1:  # a step as long as the age limit does not wait at all
            self._since = now
            due = self.batch == 1 or (self._last is not None and now - self._last >= self.max_age_s)
        else:
            due = len(self._steps) >= self.batch or now - self._since >= self.max_age_s
        self._last = now
        return due

    def add_light(
        self,
        start: Any,
        end: Any,
        segments: Sequence[tuple[Any, str]],
        peak_memory_bytes: int | None,
        audited: bool,
        host: dict[str, float] | None = None,
    ) -> bool:
        """Keep one light step's tokens; True when the batch is due (:meth:`flush` it)."""
        self._steps.append((start, end, segments, peak_memory_bytes, audited, host))
        return self._added()

    def add_detailed(
        self, summarize: Callable[[], dict[str, Any]], host: dict[str, float] | None = None
    ) -> bool:
        """Keep a detailed step as the function returning its summary (it resolves its own
        tokens with the clock it was timed with); True when the batch is due."""
        self._steps.append((summarize, host))
        return self._added()

    def flush(self, clock: Any, store: Any) -> None:
        """Summarize every waiting step into ``store`` (a ``StepStore``), in step order; the
        light ones' tokens are resolved with ``clock`` in one ``clock.resolve`` call."""
        steps, self._steps = self._steps, []
        if not steps:
            return
        tokens: list[Any] = []
        for step in steps:
            if len(step) == 6:  # (a light step's tokens)
                start, end, segments, *_ = step
                tokens.append(start)
                tokens.append(end)
                tokens.extend(t for t, _ in segments)
        ns = clock.resolve(tokens) if tokens else []
        i = 0
        for step in steps:
            if len(step) == 2:
                summarize, host = step
                summary = summarize()
                if host:
                    summary.update(host)
                store.append(summary)
                continue
            _, _, segments, peak, audited, host = step
            n = len(segments)
            resolved = [(ns[i + 2 + k], phase) for k, (_, phase) in enumerate(segments)]
            summary = light_step((ns[i], ns[i + 1]), resolved, peak)
            summary["audited"] = audited
            if host:
                summary.update(host)
            store.append(summary)
            i += 2 + n

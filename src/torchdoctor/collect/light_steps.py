"""Light steps kept as raw clock tokens and summarized in batches.

A light step (outside detail windows, ``collect/schedule.py``) records its start and end tokens
and its phase changes. Turning them into a summary (resolving the tokens, the phase durations,
the step store's streams) is the same work for every step, so it is done for a batch at once:
when :data:`BATCH` steps wait, when the oldest has waited :data:`MAX_AGE_S` (the live view and
checkpoints see figures at most that old), before a detailed step is stored (steps stay in
order), and whenever the profiler needs the figures (a snapshot, the end of the run).

Two reasons, both measured (BENCHMARKS.md):

- on CPU, a step's own bookkeeping runs after the model's compute has evicted it from the
  caches, so a batch of 32 costs far less than 32 single summaries;
- on CUDA, resolving a step's events waits for the GPU to finish that step; a batch waits once
  per :data:`BATCH` steps instead of at every step, so a light step adds no per-step sync.

Example:
    >>> from torchdoctor.collect.clocks import CpuClock
    >>> from torchdoctor.collect.step_store import StepStore
    >>> pending, store = LightSteps(), StepStore()
    >>> pending.add(0, 2_000_000, [(0, "forward"), (1_500_000, "backward")], None, True)
    False
    >>> len(pending), store.count
    (1, 0)
    >>> pending.flush(CpuClock(), store)
    >>> len(pending), [(s["wall_ms"], s["phases"]["backward"], s["detailed"]) for s in store]
    (0, [(2.0, 0.5, False)])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from torchdoctor.collect.aggregate import light_step

#: light steps summarized together (at most this many wait)
BATCH = 32
#: ... and none waits longer than this (seconds): what the live view and checkpoints lag by
MAX_AGE_S = 0.5


class LightSteps:
    """Light steps waiting to be summarized: ``(start, end, segments, peak, audited)`` each.

    Example:
        >>> pending = LightSteps(batch=2)
        >>> pending.add(0, 1, [(0, "other")], None, True), pending.add(1, 2, [(1, "other")], None, True)
        (False, True)
    """

    def __init__(self, batch: int = BATCH, max_age_s: float = MAX_AGE_S) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1 light step, got {batch}")
        self.batch = batch
        self.max_age_s = max_age_s
        self._steps: list[tuple[Any, Any, Sequence[tuple[Any, str]], int | None, bool]] = []
        self._since = 0.0  # time.monotonic() when the oldest waiting step was added

    def __len__(self) -> int:
        return len(self._steps)

    def add(
        self,
        start: Any,
        end: Any,
        segments: Sequence[tuple[Any, str]],
        peak_memory_bytes: int | None,
        audited: bool,
    ) -> bool:
        """Keep one light step's tokens; True when the batch is due (:meth:`flush` it)."""
        steps = self._steps
        steps.append((start, end, segments, peak_memory_bytes, audited))
        if len(steps) == 1:
            self._since = time.monotonic()
            return self.batch == 1
        return len(steps) >= self.batch or time.monotonic() - self._since >= self.max_age_s

    def flush(self, clock: Any, store: Any) -> None:
        """Resolve every waiting step's tokens in one ``clock.resolve`` call and append their
        summaries to ``store`` (a ``StepStore``), in step order."""
        steps, self._steps = self._steps, []
        if not steps:
            return
        tokens: list[Any] = []
        for start, end, segments, _, _ in steps:
            tokens.append(start)
            tokens.append(end)
            tokens.extend(t for t, _ in segments)
        ns = clock.resolve(tokens)
        i = 0
        for _, _, segments, peak, audited in steps:
            n = len(segments)
            resolved = [(ns[i + 2 + k], phase) for k, (_, phase) in enumerate(segments)]
            summary = light_step((ns[i], ns[i + 1]), resolved, peak)
            summary["audited"] = audited
            store.append(summary)
            i += 2 + n

    def clear(self) -> None:
        """Forget the waiting steps (they were partial: the step boundary was revised)."""
        self._steps = []

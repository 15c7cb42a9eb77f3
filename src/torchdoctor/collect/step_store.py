"""Bounded storage of per-step summaries, so a run of a million steps fits in memory and file.

The profiler appends one summary per step (wall time, phases, and for detailed steps the
per-node forward/backward/calls). A :class:`StepStore` keeps:

- the first :data:`FIRST_STEPS` summaries in full;
- after them, a uniform random sample (reservoir, seeded: runs repeat) of the later steps:
  :data:`SAMPLE_DETAILED` detailed ones (per-node figures: what the module tree is built from)
  and :data:`SAMPLE_LIGHT` light ones (step time and phases only);
- the last :data:`RECENT_STEPS` summaries (the live view reads them);
- every later light step over :data:`LONG_RATIO` x the median step for its own work (its wall
  less its wait for a core: a busy host's slowed steps are no periodic work; at most
  :data:`LONG_LISTED`), its index, wall and wait: the periodic-steps advice and the sync
  audit's rate find an evaluation every N steps in the whole run, not in the sample (one every
  300 steps of 3,000 kept 3 of its 9 steps: read as every 600, its reads and cost at the
  sample's rate);
- for every step, streamed into running summaries: count, sum, min, max and a log-bucket
  histogram (each bucket 1% wide: quantiles within 0.5% of the exact value) of the step time and
  of each phase, and the largest peak memory.

So at most ``FIRST_STEPS + SAMPLE_DETAILED + SAMPLE_LIGHT + RECENT_STEPS`` summaries are held
whatever the run's length, and the session lists at most ``FIRST_STEPS + SAMPLE_DETAILED +
SAMPLE_LIGHT`` steps. Until a step is dropped, everything is exact (the session is the same as
keeping all). Each kept summary carries its step's ``index`` among the profiled steps.

Example:
    >>> store = StepStore(first=2, sample_detailed=1, sample_light=1)
    >>> for k in range(100):
    ...     store.append({"wall_ms": 1.0 + k % 3, "phases": {"forward": 1.0}})
    >>> store.count, len(store), store.sampled
    (100, 3, True)
    >>> store.step_stat()["max"], round(store.step_stat()["mean"], 2)
    (3.0, 1.99)
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator
from typing import Any

from torchdoctor.collect.assemble import stat_with_mean
from torchdoctor.session import stat
from torchdoctor.session_read import PHASES

#: summaries kept in full from the start of the run
FIRST_STEPS = 500
#: uniform sample of the later detailed steps (per-node figures)
SAMPLE_DETAILED = 250
#: uniform sample of the later light steps (step time and phases only)
SAMPLE_LIGHT = 250
#: the most recent summaries (for the live view)
RECENT_STEPS = 50
#: a later light step this many times the median step, and LONG_PAST_MS past it, is listed
#: (below the periodic-steps rule's 2x and 5 ms: the rule applies its own to the final median)
LONG_RATIO, LONG_PAST_MS = 1.5, 2.0
#: long steps listed at most (more are counted: such steps are no rare periodic work)
LONG_LISTED = 1000
#: steps between two readings of the median step (a quantile of the histogram)
MEDIAN_EVERY = 64
#: histogram bucket ratio: quantiles read from it are within 0.5% of the exact value
_GAMMA = 1.01
_LOG_GAMMA = math.log(_GAMMA)


class StreamStat:
    """Count, sum, min, max and quantiles (log-bucket histogram) of a stream of values >= 0.

    Memory is bounded by the number of buckets between the smallest and largest positive
    value (about 231 per factor of 10), not by the number of values.

    Example:
        >>> s = StreamStat()
        >>> for v in range(1, 1001):
        ...     s.add(float(v))
        >>> s.count, s.min, s.max, abs(s.quantile(0.5) - 500.5) / 500.5 < 0.01
        (1000, 1.0, 1000.0, True)
    """

    __slots__ = ("count", "total", "min", "max", "zeros", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zeros = 0
        self.buckets: dict[int, int] = {}

    def add(self, value: float) -> None:
        """Add one value (negative values count as 0)."""
        value = max(0.0, float(value))
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if value <= 0.0:
            self.zeros += 1
            return
        key = math.ceil(math.log(value) / _LOG_GAMMA)
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) within 0.5% of the exact value, clamped to [min, max]."""
        if not self.count:
            return 0.0
        rank = q * (self.count - 1)
        seen = self.zeros
        if rank < seen:
            return 0.0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if rank < seen:
                value = 2.0 * _GAMMA**key / (_GAMMA + 1.0)  # the bucket's middle
                return min(self.max, max(self.min, value))
        return self.max

    def stat(self) -> dict[str, float]:
        """A Stat (median, min, max, q1, q3) plus the exact mean."""
        if not self.count:
            return {**stat([]), "mean": 0.0}
        return {
            "median": self.quantile(0.5),
            "min": self.min,
            "max": self.max,
            "q1": self.quantile(0.25),
            "q3": self.quantile(0.75),
            "mean": self.total / self.count,
        }


class StepStore:
    """The profiler's per-step summaries, bounded (see the module docstring).

    Iterating yields the kept summaries in step order; ``len()`` is how many are kept;
    ``count`` is how many steps were appended.

    Example:
        >>> store = StepStore()
        >>> store.append({"wall_ms": 2.0, "phases": {}})
        >>> [s["index"] for s in store], store.count, bool(store)
        ([0], 1, True)
    """

    def __init__(
        self,
        *,
        first: int = FIRST_STEPS,
        sample_detailed: int = SAMPLE_DETAILED,
        sample_light: int = SAMPLE_LIGHT,
        recent: int = RECENT_STEPS,
        seed: int = 0,
    ) -> None:
        self.first = first
        self.limits = {True: sample_detailed, False: sample_light}
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self.recent_detailed: deque[dict[str, Any]] = deque(maxlen=max(1, recent // 5))
        self._random = random.Random(seed)
        self._seed = seed
        self.clear()

    def clear(self) -> None:
        """Forget every step (the profiler found the steps so far were partial)."""
        self.count = 0
        self.detailed_count = 0  # steps recorded in full (module tree), of ``count``
        self.audited_count = 0  # steps the sync audit was not paused in, of ``count``
        self.head: list[dict[str, Any]] = []
        self.samples: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        self.seen_later = {True: 0, False: 0}
        self.wall = StreamStat()
        self.phases = {p: StreamStat() for p in PHASES}
        self.peak_memory_bytes: int | None = None
        self.long: list[dict[str, Any]] = []  # later light steps over LONG_RATIO x median
        self.long_more = 0  # ... past LONG_LISTED, counted only
        self._median: float | None = None
        self.recent.clear()
        self.recent_detailed.clear()
        self._random.seed(self._seed)

    def append(self, summary: dict[str, Any]) -> None:
        """Add the next step's summary (its ``index`` is set to the step's number)."""
        summary["index"] = self.count
        self.count += 1
        self.wall.add(summary.get("wall_ms") or 0.0)
        peak = summary.get("peak_memory_bytes")
        if peak is not None:
            self.peak_memory_bytes = max(peak, self.peak_memory_bytes or 0)
        self.recent.append(summary)
        detailed = bool(summary.get("detailed", True))
        self.detailed_count += detailed
        if detailed:  # light steps do not tell forward from "other": phases come from detailed
            phases = summary.get("phases") or {}
            for name, series in self.phases.items():
                series.add(phases.get(name, 0.0))
        self.audited_count += bool(summary.get("audited", True))
        if detailed:
            self.recent_detailed.append(summary)
        if len(self.head) < self.first:
            self.head.append(summary)
            return
        if not detailed:
            self._list_long(summary)
        seen = self.seen_later[detailed] = self.seen_later[detailed] + 1
        sample, limit = self.samples[detailed], self.limits[detailed]
        if len(sample) < limit:  # reservoir sampling (algorithm R): uniform over later steps
            sample.append(summary)
        else:
            slot = self._random.randrange(seen)
            if slot < limit:
                sample[slot] = summary

    def _list_long(self, summary: dict[str, Any]) -> None:
        """List a later light step over LONG_RATIO x the median step for its own work."""
        if self._median is None or self.count % MEDIAN_EVERY == 0:
            self._median = self.wall.quantile(0.5)
        wall = float(summary.get("wall_ms") or 0.0)
        own = wall - float(summary.get("cpu_wait_ms") or 0.0)
        if own <= LONG_RATIO * self._median or own - self._median <= LONG_PAST_MS:
            return
        if len(self.long) < LONG_LISTED:  # (for their own time; as the sync audit reads them)
            keys = ("index", "wall_ms", "cpu_wait_ms", "model_calls", "audited", "detailed")
            self.long.append({key: summary[key] for key in keys if key in summary})
        else:
            self.long_more += 1

    def unkept_long(self) -> list[dict[str, Any]]:
        """The listed long light steps the kept summaries left out (index, wall and wait ms,
        model calls, whether audited)."""
        kept = {int(s["index"]) for s in self.kept()}
        return [s for s in self.long if int(s["index"]) not in kept]

    @property
    def sampled(self) -> bool:
        """Whether some steps' summaries were dropped (figures then come from the streams)."""
        return len(self) < self.count

    def kept(self) -> list[dict[str, Any]]:
        """The kept summaries in step order."""
        later = sorted([*self.samples[True], *self.samples[False]], key=lambda s: s["index"])
        return [*self.head, *later]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.kept())

    def __len__(self) -> int:
        return len(self.head) + len(self.samples[True]) + len(self.samples[False])

    def __bool__(self) -> bool:
        return self.count > 0

    def step_stat(self) -> dict[str, float]:
        """Stat (with mean) of every step's wall time, exact until steps are dropped."""
        if not self.sampled:
            return stat_with_mean([s["wall_ms"] for s in self.head])
        return self.wall.stat()

    def phase_stats(self) -> dict[str, dict[str, float]]:
        """Per phase, the Stat (with mean) over every detailed step (light steps have no phases
        but the step time)."""
        if not self.sampled:
            detailed = [s for s in self.head if s.get("detailed", True)] or self.head
            return {p: stat_with_mean([s["phases"].get(p, 0.0) for s in detailed]) for p in PHASES}
        return {p: series.stat() for p, series in self.phases.items()}

    def describe(self) -> dict[str, Any]:
        """``config.step_records``: how many steps were seen, how many the session lists, and
        how the rest is summarized; in a sampled run, ``long_unkept``: ``[index, wall_ms,
        own_ms]`` (own: less its wait for a core) of each long light step the list left out
        (``long_more``: those past LONG_LISTED).

        Example:
            >>> store = StepStore(first=4, sample_detailed=1, sample_light=1)
            >>> for k in range(40):
            ...     store.append({"wall_ms": 50.0 if k % 10 == 9 else 1.0, "detailed": False})
            >>> store.describe()["long_unkept"]  # (the sample kept none of them)
            [[9, 50.0, 50.0], [19, 50.0, 50.0], [29, 50.0, 50.0], [39, 50.0, 50.0]]
        """
        unkept = [[s["index"], round(float(s["wall_ms"]), 3),
                   round(float(s["wall_ms"]) - float(s.get("cpu_wait_ms") or 0.0), 3)]
                  for s in self.unkept_long()]  # fmt: skip
        listed: dict[str, Any] = {"long_unkept": unkept} if self.sampled else {}
        if self.long_more:
            listed["long_more"] = self.long_more
        return {
            "seen": self.count,
            "kept": len(self),
            "first": len(self.head),
            "sampled_detailed": len(self.samples[True]),
            "sampled_light": len(self.samples[False]),
            "limits": {
                "first": self.first,
                "sample_detailed": self.limits[True],
                "sample_light": self.limits[False],
            },  # fmt: skip
            "streamed": "step time and phases: count, mean, min, max exact; quantiles from a "
            "log histogram within 0.5%",
            **listed,
        }

    def apply_to(self, session: Any, typical: list[dict[str, Any]] | None = None) -> None:
        """Put the figures over every step into a session built from the kept summaries; with
        ``typical`` (the kept detailed steps the tree keeps, when it left long ones out), the
        phases stay theirs: the streamed phases hold the steps left out (nanoGPT's phases
        summed to 106% of the tree's step)."""
        config = session["config"]
        config["steps"] = self.count
        config["step_records"] = self.describe()
        if not self.sampled:
            return
        session["step_ms"] = self.step_stat()
        if not typical:
            session["phases"] = self.phase_stats()
        config.setdefault("notes", []).append(
            f"{self.count} steps: step time {'' if typical else 'and phases '}over all of them "
            "(quantiles within 0.5%); "
            f"the steps list, the module tree{' and the phases' if typical else ''} come from "
            f"{len(self)} kept steps (the first "
            f"{len(self.head)} and a uniform sample of the rest)"
        )

"""The process's kernel (system) time and minor page faults per step, from the steps' figures.

Each step records the whole process's ``sys_ms``, ``user_ms`` and ``minor_faults``
(``collect/host_time.py``: ``getrusage(RUSAGE_SELF)`` at the step's two boundaries). A step's
kernel share is its kernel time over its wall time, at most its share of the process's CPU
time (``sys / (user + sys)``: with several threads their CPU times add up past the wall time).
:func:`kernel_time` sums a session's steps up; the ``kernel-page-faults`` advice and the
reports' caveat line read it. Pure functions: no I/O.

Example:
    >>> steps = [{"wall_ms": 800.0, "sys_ms": 420.0, "user_ms": 370.0, "minor_faults": 267_000}] * 5
    >>> found = kernel_time({"steps": steps})
    >>> round(found.share, 2), found.kernel_ms, found.faults, round(found.zeroed_mb)
    (0.53, 420.0, 267000, 1094)
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchdoctor.session_read import fmt_count, fmt_ms

#: glibc with its mmap and trimming off: freed large blocks stay mapped for the next step, so
#: their pages are not zero-filled again (the kernel-page-faults advice prescribes it, and
#: ``torchdoctor tune``'s knob malloc_cache tries it; glibc reads them when a process starts)
MALLOC_CACHE_ENV = (("MALLOC_MMAP_MAX_", "0"), ("MALLOC_TRIM_THRESHOLD_", "100000000000"))

#: steps with the figures needed to say anything
MIN_STEPS = 3
#: bytes the kernel zero-fills per minor fault of fresh anonymous memory (a base page)
PAGE_BYTES = 4096
#: the typical step's kernel share past which the reports show it beside the phases
SHOWN_SHARE = 0.10


def kernel_share(step: Mapping[str, Any]) -> float | None:
    """A step's kernel time as a share of its wall time, at most its share of the process's
    CPU time; None without the figures.

    Example:
        >>> kernel_share({"wall_ms": 10.0, "sys_ms": 4.0, "user_ms": 6.0})
        0.4
        >>> kernel_share({"wall_ms": 10.0, "sys_ms": 8.0, "user_ms": 32.0}), kernel_share({"wall_ms": 1.0})
        (0.2, None)
    """
    kernel, wall = step.get("sys_ms"), float(step.get("wall_ms") or 0.0)
    if kernel is None or wall <= 0.0:
        return None
    share = float(kernel) / wall
    user = step.get("user_ms")
    if user is not None and float(kernel) + float(user) > 0.0:
        share = min(share, float(kernel) / (float(kernel) + float(user)))
    return min(1.0, share)


def fault_steps(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The steps that carry the process's kernel time and minor faults.

    Example:
        >>> len(fault_steps([{"wall_ms": 1.0, "sys_ms": 0.1, "minor_faults": 3}, {"wall_ms": 1.0}]))
        1
    """
    return [s for s in steps if kernel_share(s) is not None and s.get("minor_faults") is not None]


@dataclass
class KernelTime:
    """A session's kernel time: the typical step's (medians: ``share``, ``kernel_ms``,
    ``faults``) and the steps' together (``fraction``: kernel time over wall time, each step's
    capped as :func:`kernel_share`; ``mean_step``: their mean wall ms).

    Example:
        >>> KernelTime(8, 0.5, 400.0, 200_000, 0.45, 900.0).zeroed_mb
        819.2
    """

    steps: int
    share: float
    kernel_ms: float
    faults: float
    fraction: float
    mean_step: float

    @property
    def zeroed_mb(self) -> float:
        """MB of fresh pages the kernel zero-filled in the typical step (4 KiB per fault)."""
        return self.faults * PAGE_BYTES / 1e6


def step_weights(steps: Sequence[Mapping[str, Any]]) -> list[float]:
    """How many of the run's steps each of ``steps`` stands for: the gap to the next one's
    ``index`` (the last: the gap before it). A long run keeps its first steps and a uniform
    sample of the rest (``collect/step_store.py``), so a plain median over the kept steps
    weighs the first ones as much as the whole rest: a generation loop whose input grows (each
    step slower than the last) had its kernel time per step told at half the run's. Without
    indices (or with unordered ones), each stands for one.

    Example:
        >>> step_weights([{"index": 0}, {"index": 1}, {"index": 5}, {"index": 9}])
        [1.0, 4.0, 4.0, 4.0]
        >>> step_weights([{"index": 3}, {}])
        [1.0, 1.0]
    """
    indices = [s.get("index") for s in steps]
    if len(steps) < 2 or not all(isinstance(i, int) for i in indices) or any(
        b <= a for a, b in zip(indices, indices[1:])  # type: ignore[operator]
    ):
        return [1.0] * len(steps)
    gaps = [float(b - a) for a, b in zip(indices, indices[1:])]  # type: ignore[operator]
    return [*gaps, gaps[-1]]


def weighted_median(values: Sequence[Any], weights: Sequence[float]) -> Any:
    """The median of ``values`` each counted ``weights`` times (equal weights: the plain median).

    Example:
        >>> weighted_median([1.0, 2.0, 10.0], [1.0, 1.0, 4.0]), weighted_median([1.0, 3.0], [1.0, 1.0])
        (10.0, 2.0)
    """
    if len(set(weights)) <= 1:
        return statistics.median(values)
    pairs = sorted(zip(values, weights))
    half, seen = sum(weights) / 2.0, 0.0
    for value, weight in pairs:
        seen += weight
        if seen >= half:
            return value
    return pairs[-1][0]


def kernel_time(session: Mapping[str, Any]) -> KernelTime | None:
    """The session's :class:`KernelTime`; None with fewer than :data:`MIN_STEPS` steps carrying
    the figures (a session from before they were recorded, Windows). Each kept step counts for
    the run's steps it stands for (:func:`step_weights`).

    Example:
        >>> kernel_time({"steps": [{"wall_ms": 1.0, "sys_ms": 0.1, "minor_faults": 3}]}) is None
        True
    """
    steps = fault_steps(session.get("steps") or ())
    if len(steps) < MIN_STEPS:
        return None
    weights = step_weights(steps)
    wall = sum(w * float(s["wall_ms"]) for w, s in zip(weights, steps))
    if wall <= 0.0:
        return None
    return KernelTime(
        steps=len(steps),
        share=weighted_median([kernel_share(s) or 0.0 for s in steps], weights),
        kernel_ms=weighted_median([float(s["sys_ms"]) for s in steps], weights),
        faults=weighted_median([int(s["minor_faults"]) for s in steps], weights),
        fraction=sum(w * (kernel_share(s) or 0.0) * float(s["wall_ms"])
                     for w, s in zip(weights, steps)) / wall,  # fmt: skip
        mean_step=wall / sum(weights),
    )


def kernel_time_text(session: Mapping[str, Any]) -> str | None:
    """The line the reports show under the phases when the typical step's kernel share is at
    least :data:`SHOWN_SHARE`, else None.

    Example:
        >>> steps = [{"wall_ms": 800.0, "sys_ms": 420.0, "user_ms": 370.0, "minor_faults": 267_000}] * 5
        >>> kernel_time_text({"steps": steps})
        'the process spent 52% of the step in the kernel (system CPU time, 420 ms per step), with 267,000 minor page faults per step (about 1,094 MB of fresh memory zero-filled): every time here includes it'
        >>> kernel_time_text({"steps": [{**steps[0], "sys_ms": 20.0}] * 5}) is None
        True
    """
    found = kernel_time(session)
    if found is None or found.share < SHOWN_SHARE:
        return None
    return (
        f"the process spent {100 * found.share:.0f}% of the step in the kernel (system CPU "
        f"time, {fmt_ms(found.kernel_ms)} per step), with {fmt_count(found.faults)} minor page "
        f"faults per step (about {fmt_count(found.zeroed_mb)} MB of fresh memory zero-filled): "
        "every time here includes it"
    )

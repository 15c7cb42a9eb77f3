"""Run several callables across input sizes and fit how their cost grows (log-log slope)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from torchdoctor.measure.compare import _uses_cuda
from torchdoctor.measure.table import BenchTable


def loglog_slope(sizes: Sequence[float], times: Sequence[float]) -> float | None:
    """Least-squares slope of log(time) against log(size); None with fewer than two points.

    Example:
        >>> loglog_slope([1, 2, 4, 8], [1.0, 4.0, 16.0, 64.0]), loglog_slope([1], [1.0])
        (2.0, None)
    """
    points = [(math.log(s), math.log(t)) for s, t in zip(sizes, times) if s > 0 and t > 0]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


@dataclass
class SweepResult:
    """Median milliseconds per (callable, size), and each callable's log-log slope.

    Example:
        >>> result = SweepResult(sizes=[10, 100], medians_ms={"loop": [1.0, 10.0]})
        >>> result.slope("loop")
        1.0
    """

    sizes: list[Any]
    medians_ms: dict[str, list[float | None]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def slope(self, name: str) -> float | None:
        pairs = [(s, t) for s, t in zip(self.sizes, self.medians_ms[name]) if t is not None]
        try:
            return loglog_slope([float(s) for s, _ in pairs], [t for _, t in pairs])
        except (TypeError, ValueError):  # sizes that are not numbers
            return None

    def to_table(self, title: str = "sweep") -> BenchTable:
        table = BenchTable(title, ["callable", *(str(s) for s in self.sizes), "log-log slope"])
        for name, row in self.medians_ms.items():
            slope = self.slope(name)
            table.add_row(name, *row, None if slope is None else round(slope, 2))
        table.notes.append("cells: median ms per call; slope: d log(time) / d log(size)")
        table.notes.extend(f"{name}: {err}" for name, err in self.errors.items())
        return table


def _as_call(inputs: Any) -> tuple[tuple, dict]:
    if isinstance(inputs, tuple):
        return inputs, {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    return (inputs,), {}


def sweep(
    callables_by_name: Mapping[str, Callable[..., Any]],
    sizes: Sequence[Any],
    make_inputs: Callable[[Any], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> SweepResult:
    """Time each callable at each size; inputs come from ``make_inputs(size)``.

    ``make_inputs`` returns a tuple (positional arguments), a dict (keyword arguments) or a
    single argument. At each size the callables run interleaved. A callable that raises at a
    size gets no time there (None) and its error is kept in ``result.errors``.

    Example:
        >>> import torch
        >>> from torchdoctor.measure import sweep
        >>> r = sweep({"sum": torch.sum}, [1000, 10000], lambda n: torch.ones(n), repeats=3)
        >>> len(r.medians_ms["sum"])
        2
    """
    if not callables_by_name:
        raise ValueError("sweep needs at least one callable, e.g. {'naive': f, 'fast': g}")
    if not sizes:
        raise ValueError("sweep needs at least one size")
    result = SweepResult(sizes=list(sizes), medians_ms={n: [] for n in callables_by_name})
    for size in sizes:
        args, kwargs = _as_call(make_inputs(size))
        sync = torch.cuda.synchronize if _uses_cuda(args, kwargs) else (lambda: None)
        alive = {}
        for name, fn in callables_by_name.items():
            try:
                for _ in range(max(warmup, 0)):
                    fn(*args, **kwargs)
                alive[name] = fn
            except Exception as exc:
                result.errors[name] = f"size {size}: {type(exc).__name__}: {exc}"
        times: dict[str, list[int]] = {name: [] for name in alive}
        for _ in range(repeats):
            for name, fn in list(alive.items()):
                sync()
                start = clock()
                try:
                    fn(*args, **kwargs)
                except Exception as exc:
                    result.errors[name] = f"size {size}: {type(exc).__name__}: {exc}"
                    del alive[name]
                    continue
                sync()
                times[name].append(clock() - start)
        for name in callables_by_name:
            samples = times.get(name) if name in alive else None
            result.medians_ms[name].append(statistics.median(samples) / 1e6 if samples else None)
    return result

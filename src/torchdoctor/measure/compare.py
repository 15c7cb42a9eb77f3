"""Compare two callables side by side: interleaved timing, median ratio with spread, equivalence.

Absolute times on shared machines are noise; the ratio of two things measured in one process,
interleaved (A B A B ...) after warm-up, is not. That is the only speed claim torchdoctor makes.
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from torchdoctor.measure.equivalence import Equivalence, compare_outputs
from torchdoctor.measure.table import BenchTable
from torchdoctor.session_read import quantile


def _iter_tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _iter_tensors(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _iter_tensors(v)


def _uses_cuda(*values: Any) -> bool:
    return any(t.is_cuda for v in values for t in _iter_tensors(v))


@dataclass
class Comparison:
    """Result of :func:`compare`. Times in milliseconds; ``speedup`` > 1 means the candidate is
    faster (median over the interleaved pairs of baseline time / candidate time).

    Example:
        >>> c = Comparison(("loop", "batched"), 4.0, 1.0, 4.0, 3.5, 4.5, 3.8, 4.2, 5, True)
        >>> c.verdict, c.summary().split(";")[0]
        ('equivalent', 'loop 4.000 ms, batched 1.000 ms -> 4.00x (min 3.50, IQR 3.80-4.20, n=5)')
    """

    names: tuple[str, str]
    baseline_ms: float | None = None
    candidate_ms: float | None = None
    speedup: float | None = None
    speedup_min: float | None = None
    speedup_max: float | None = None
    speedup_q1: float | None = None
    speedup_q3: float | None = None
    repeats: int = 0
    equivalent: bool | None = None
    mismatches: list[str] = field(default_factory=list)
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    error: str | None = None  # "baseline raised ValueError: ..." when a side raised

    @property
    def verdict(self) -> str:
        if self.error:
            return f"error: {self.error}"
        if self.equivalent is None:
            return "not checked"
        if self.equivalent:
            return "equivalent"
        return "DIFFERENT: " + "; ".join(self.mismatches[:3])

    def summary(self) -> str:
        if self.error:
            return f"{self.names[0]} vs {self.names[1]}: {self.verdict}"
        return (
            f"{self.names[0]} {self.baseline_ms:.3f} ms, {self.names[1]} {self.candidate_ms:.3f} ms"
            f" -> {self.speedup:.2f}x (min {self.speedup_min:.2f}, IQR {self.speedup_q1:.2f}-"
            f"{self.speedup_q3:.2f}, n={self.repeats}); {self.verdict}"
        )

    __str__ = summary

    def to_table(self, title: str | None = None) -> BenchTable:
        table = BenchTable(
            title or f"{self.names[0]} vs {self.names[1]}",
            [
                f"{self.names[0]} ms",
                f"{self.names[1]} ms",
                "speedup",
                "spread (min-max)",
                "IQR",
                "verdict",
            ],
        )
        table.add_row(*self.row())
        return table

    def row(self) -> list[Any]:
        """Cells for a table row: baseline ms, candidate ms, speedup, min-max, IQR, verdict."""
        if self.error:
            return [None, None, None, None, None, self.verdict]
        return [
            self.baseline_ms,
            self.candidate_ms,
            f"{self.speedup:.2f}x",
            f"{self.speedup_min:.2f}-{self.speedup_max:.2f}",
            f"{self.speedup_q1:.2f}-{self.speedup_q3:.2f}",
            self.verdict,
        ]


def _gradients(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[Any, list]:
    leaves = [t for t in _iter_tensors((args, kwargs)) if t.requires_grad and t.is_leaf]
    for t in leaves:
        t.grad = None
    out = fn(*args, **kwargs)
    scalars = [t.float().sum() for t in _iter_tensors(out) if t.requires_grad]
    if scalars and leaves:
        torch.autograd.backward(scalars)
    return out, [None if t.grad is None else t.grad.detach().clone() for t in leaves]


def compare(
    baseline: Callable[..., Any],
    candidate: Callable[..., Any],
    *args: Any,
    warmup: int = 2,
    repeats: int = 10,
    check: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    grads: bool = False,
    names: tuple[str, str] = ("baseline", "candidate"),
    clock: Callable[[], int] = time.perf_counter_ns,
    **kwargs: Any,
) -> Comparison:
    """Run ``baseline`` and ``candidate`` on the same arguments, interleaved, and compare them.

    Both are called ``warmup`` times, then ``repeats`` times in alternation (A B A B ...). When
    any input lives on CUDA the device is synchronized around each call, so the times are real.
    With ``check`` the outputs are compared (:func:`compare_outputs`): floating values within
    ``atol + rtol * |baseline|``, integer/bool tensors exactly. With ``grads`` the timed call
    includes a backward pass of the summed outputs, and the gradients with respect to the inputs
    that require grad are compared too (at least one argument must require grad: the backward
    runs through the arguments). A side that raises is reported, never re-raised.

    Example:
        >>> import torch
        >>> from torchdoctor.measure import compare
        >>> x = torch.randn(64, 64)
        >>> result = compare(lambda a, b: a @ b, torch.matmul, x, x, names=("@", "matmul"))
        >>> result.equivalent
        True
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if grads and not any(t.requires_grad and t.is_leaf for t in _iter_tensors((args, kwargs))):
        raise ValueError(
            "grads=True times a backward through the arguments that require grad, and none "
            "does: pass the inputs with requires_grad=True as arguments, or let each side run "
            "its own backward (and return what to compare) with grads=False"
        )
    result = Comparison(names=tuple(names))  # type: ignore[arg-type]
    sync = torch.cuda.synchronize if _uses_cuda(args, kwargs) else (lambda: None)
    sides = [baseline, candidate]

    def call(side: int) -> Any:
        fn = sides[side]
        if grads:
            return _gradients(fn, args, kwargs)
        return fn(*args, **kwargs)

    def timed(side: int) -> tuple[int, Any]:
        sync()
        start = clock()
        out = call(side)
        sync()
        return clock() - start, out

    outputs: list[Any] = [None, None]
    for side in (0, 1):
        try:
            outputs[side] = call(side)
            for _ in range(max(warmup - 1, 0)):
                call(side)
        except Exception as exc:  # a side that raises is a verdict, not a crash
            result.error = f"{names[side]} raised {type(exc).__name__}: {exc}"
            result.equivalent = False if check else None
            result.mismatches.append(traceback.format_exc(limit=-3))
            return result

    if check:
        verdict: Equivalence = compare_outputs(outputs[0], outputs[1], rtol=rtol, atol=atol)
        result.equivalent = verdict.equivalent
        result.mismatches = verdict.mismatches
        result.max_abs_error = verdict.max_abs_error
        result.max_rel_error = verdict.max_rel_error

    times: list[list[int]] = [[], []]
    try:
        for i in range(repeats):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate who goes first
            for side in order:
                elapsed, _ = timed(side)
                times[side].append(elapsed)
    except Exception as exc:
        result.error = f"{names[side]} raised {type(exc).__name__} while timed: {exc}"
        return result

    ratios = [a / max(b, 1) for a, b in zip(times[0], times[1])]
    result.repeats = repeats
    result.baseline_ms = statistics.median(times[0]) / 1e6
    result.candidate_ms = statistics.median(times[1]) / 1e6
    result.speedup = statistics.median(ratios)
    result.speedup_min, result.speedup_max = min(ratios), max(ratios)
    result.speedup_q1, result.speedup_q3 = quantile(ratios, 0.25), quantile(ratios, 0.75)
    return result

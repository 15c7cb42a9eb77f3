"""Sync audit overhead (suite "syncs"): fast (default) and thorough modes vs no audit.

1. A training step (forward + backward + AdamW) of a 12-layer transformer (``nn.Transformer``,
   6 encoder + 6 decoder layers, width 256, feed-forward 1024, batch 8, sequence 64; the same
   step as the profiler benchmark). Also shown: a TorchFunctionMode and a TorchDispatchMode
   that do nothing, the floor any mode-based audit pays.
2. A loop of 300 small elementwise ops on a 16-element tensor: the worst case for a mode,
   whose cost is per call, not per FLOP.

Each variant is compared with the plain step by :func:`torchdoctor.measure.compare`
(interleaved, after warm-up); overhead = 1 / speedup - 1, with the quartiles of the per-pair
ratios, from wall time and from process CPU time (steadier on a shared machine). The audit is entered and left around every timed call (that cost is included). The
"in-run estimate" column is what ``audit.summary()["overhead_pct"]`` reports from its call
count, to check that estimate. "syncs found" must be 0: both workloads are sync-free.

Run: ``torchdoctor bench syncs`` (``--quick`` for tiny sizes).

Example:
    >>> tables = run(quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from torchdoctor.benchmarks._models import transformer_train_step
from torchdoctor.collect.syncs import sync_audit
from torchdoctor.measure.compare import compare
from torchdoctor.measure.table import BenchTable
from torchdoctor.session_read import quantile


class _EmptyFunctionMode(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        return func(*args, **(kwargs or {}))


class _EmptyDispatchMode(TorchDispatchMode):
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        return func(*args, **(kwargs or {}))


def _transformer_step(quick: bool) -> tuple[Callable[[], Any], str]:
    _, step, label = transformer_train_step(quick)
    return step, label.replace("transformer", "transformer train step", 1)


def _small_ops(quick: bool) -> tuple[Callable[[], Any], str]:
    count = 30 if quick else 300
    x0 = torch.linspace(0, 1, 16)

    def loop() -> torch.Tensor:
        x = x0
        for _ in range(count // 3):
            x = x * 1.0001
            x = x + 0.001
            x = torch.tanh(x)
        return x

    return loop, f"loop of {count} small ops (16 elements)"


def _in_mode(step: Callable[[], Any], *modes: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        entered = [mode() for mode in modes]
        for mode in entered:
            mode.__enter__()
        try:
            return step()
        finally:
            for mode in reversed(entered):
                mode.__exit__(None, None, None)

    return run


def _audited(step: Callable[[], Any], thorough: bool, last: dict[str, Any]) -> Callable[[], Any]:
    def run() -> Any:
        with sync_audit(thorough=thorough) as audit:
            result = step()
        last["audit"] = audit
        return result

    return run


def _cpu_timed(fn: Callable[[], Any], store: list[int]) -> Callable[[], Any]:
    """``fn`` that also appends the process CPU time of each call (ns) to ``store``."""

    def run() -> Any:
        start = time.process_time_ns()
        try:
            return fn()
        finally:
            store.append(time.process_time_ns() - start)

    return run


def _cpu_overhead(plain: list[int], audited: list[int], repeats: int) -> tuple[float, str]:
    pairs = [a / p - 1.0 for p, a in zip(plain[-repeats:], audited[-repeats:]) if p > 0]
    values = [100.0 * v for v in pairs] or [float("nan")]
    return statistics.median(
        values
    ), f"{quantile(values, 0.25):.1f} to {quantile(values, 0.75):.1f}"


def overhead_table(workload: str, quick: bool) -> BenchTable:
    """Overhead of the fast and thorough audits (and empty modes) on one workload.

    Example:
        >>> table = overhead_table("small ops", quick=True)
        >>> [row[0] for row in table.rows][:2]
        ['fast audit (default)', 'thorough audit']
    """
    step, label = (_transformer_step if workload == "transformer" else _small_ops)(quick)
    repeats = 3 if quick else (10 if workload == "transformer" else 30)
    table = BenchTable(
        f"Sync audit overhead: {label}",
        ["variant", "plain ms", "with ms", "overhead % (wall)", "wall q1-q3 %",
         "overhead % (CPU)", "CPU q1-q3 %", "in-run estimate %", "syncs found"],
    )  # fmt: skip
    last: dict[str, Any] = {}
    variants: list[tuple[str, Callable[[], Any], bool]] = [
        ("fast audit (default)", _audited(step, False, last), True),
        ("thorough audit", _audited(step, True, last), True),
        ("empty TorchFunctionMode", _in_mode(step, _EmptyFunctionMode), False),
        (
            "empty function + dispatch modes",
            _in_mode(step, _EmptyDispatchMode, _EmptyFunctionMode),
            False,
        ),
    ]
    for name, candidate, is_audit in variants:
        plain_cpu: list[int] = []
        audited_cpu: list[int] = []
        result = compare(
            _cpu_timed(step, plain_cpu), _cpu_timed(candidate, audited_cpu), warmup=2,
            repeats=repeats, check=False, names=("plain", name),
        )  # fmt: skip
        cpu, cpu_spread = _cpu_overhead(plain_cpu, audited_cpu, repeats)
        overhead = 100.0 * (1.0 / result.speedup - 1.0)
        low, high = 100.0 * (1.0 / result.speedup_q3 - 1.0), 100.0 * (1.0 / result.speedup_q1 - 1.0)
        estimate = found = None
        if is_audit:
            audit = last["audit"]
            estimate = audit.summary()["overhead_pct"]
            found = len(audit.records())
        table.add_row(
            name, result.baseline_ms, result.candidate_ms, overhead, f"{low:.1f} to {high:.1f}",
            cpu, cpu_spread, estimate, found,
        )  # fmt: skip
    table.notes.append(
        f"interleaved compare, {repeats} pairs after 2 warm-up calls; wall overhead = "
        "1/speedup - 1 (median of per-pair ratios); CPU overhead = median of per-pair process "
        "CPU-time ratios - 1 (less sensitive to other processes on a shared machine); the "
        "audit is entered and left around every timed call"
    )
    return table


def run(quick: bool = False) -> list[BenchTable]:
    """Both tables: the 12-layer transformer step and the small-op loop.

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("syncs"))["sync_overhead"] is run  # `torchdoctor bench syncs` runs it
        True
    """
    return [overhead_table("transformer", quick), overhead_table("small_ops", quick)]

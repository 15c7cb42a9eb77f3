"""Garbage collection under the profiler (suite "profiler"): a step of thousands of module calls.

The case: pytorch/examples' time_sequence_prediction shape, two ``LSTMCell`` layers and a
``Linear`` head run once per time step from a Python loop (3 module calls per time step, 1000
time steps, batch 16), trained with SGD. A detailed step keeps a few small objects per module
call until the step closes; collector-tracked survivors set off full collections, which walk
every object of the process (collect/garbage.py). The table shows, interleaved in one process,
the plain step and the detailed step (without and with the sync audit): step time including
the step's close, the time the cyclic collector ran per step (``gc.callbacks``) and the full
collections per step.

Run: ``torchdoctor bench profiler`` (``--quick``: 100 time steps).

Example:
    >>> table = gc_table(steps=30, rounds=1)
    >>> [row[0] for row in table.rows]
    ['plain', 'detailed', 'detailed + sync audit']
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import torch
from torch import nn

import torchdoctor
from torchdoctor.measure.table import BenchTable
from torchdoctor.measure.threads import intra_op_threads


class _Cells(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm1, self.lstm2 = nn.LSTMCell(1, 51), nn.LSTMCell(51, 51)
        self.linear = nn.Linear(51, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = h2 = c2 = torch.zeros(x.size(0), 51)
        outputs = []
        for x_t in x.split(1, dim=1):
            h, c = self.lstm1(x_t, (h, c))
            h2, c2 = self.lstm2(h, (h2, c2))
            outputs.append(self.linear(h2))
        return torch.cat(outputs, dim=1)


class _CollectorTime:
    """Time the cyclic collector ran, and its full collections, while inside."""

    def __init__(self) -> None:
        self.seconds, self.full, self._began = 0.0, 0, 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began
            self.full += info.get("generation") == 2

    def __enter__(self) -> _CollectorTime:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        gc.callbacks.remove(self)


def gc_table(steps: int = 1000, rounds: int = 3, timed: int = 4) -> BenchTable:
    """Plain vs detailed LSTMCell-loop steps of ``steps`` time steps: time, collector time.

    Example:
        >>> gc_table(steps=20, rounds=1, timed=1).columns[-1]
        'full collections per step'
    """
    torch.manual_seed(0)
    model = _Cells()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, steps), torch.randn(16, steps)

    def step() -> None:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()

    def run(options: dict[str, Any] | None) -> tuple[float, float, float]:
        gc.collect()
        if options is None:
            with _CollectorTime() as collector:
                began = time.perf_counter()
                for _ in range(timed):
                    step()
                wall = time.perf_counter() - began
        else:
            with torchdoctor.Profiler(model, detail="always", **options) as prof:
                step()
                prof.step()
                with _CollectorTime() as collector:
                    began = time.perf_counter()
                    for _ in range(timed):
                        step()
                        prof.step()
                    wall = time.perf_counter() - began
        return 1e3 * wall / timed, 1e3 * collector.seconds / timed, collector.full / timed

    variants = {"plain": None, "detailed": {"syncs": False}, "detailed + sync audit": {}}
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, options in variants.items():
            times[name].append(run(options))
    table = BenchTable(
        f"Garbage collection under the profiler: LSTMCell x 2 + Linear per time step, "
        f"{steps} time steps, batch 16",
        ["variant", "step ms", "x plain", "collector ms per step", "full collections per step"],
    )
    base = statistics.median(t for t, _, _ in times["plain"])
    for name, values in times.items():
        ms = statistics.median(t for t, _, _ in values)
        table.add_row(
            name,
            ms,
            ms / base,
            statistics.median(c for _, c, _ in values),
            statistics.median(f for _, _, f in values),
        )
    table.notes.append(
        f"{rounds} interleaved rounds of {timed} steps after one untimed step; step ms include "
        "each step's close (prof.step()); collector ms: gc.callbacks around the timed steps; "
        f"{3 * steps + 1} module calls per step"
    )
    return table


def run(quick: bool = False) -> list[BenchTable]:
    """The table on one intra-op thread (quick: 100 time steps, one round).

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("profiler"))["profiler_gc"] is run  # `torchdoctor bench profiler`
        True
    """
    with intra_op_threads(1):
        return [gc_table(steps=100, rounds=1) if quick else gc_table()]

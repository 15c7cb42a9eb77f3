"""A light step (between detail windows) vs the plain step on the nanoGPT-shaped GPT (suite
"overhead", table 3 of ``profiler_gpt.py``): the part of the windows' overhead every step pays,
with what the session measured of it (the step bookkeeping and the phase/step event handlers).

Example:
    >>> table = light_step_table("tiny", rounds=1, steps=4)  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torchdoctor
from torchdoctor.benchmarks._gpt import gpt_train_step
from torchdoctor.measure.table import BenchTable

#: light steps timed per round: two batches of light steps (collect/light_steps.py) and more
LIGHT_STEPS = 80


def light_step_table(size: str, rounds: int, steps: int = LIGHT_STEPS) -> BenchTable:
    """A light step (after the first detail window) vs the plain step, interleaved, with what
    the session measured of it per step (bookkeeping and the phase/step event handlers).

    Example:
        >>> table = light_step_table("tiny", rounds=1, steps=4)
        >>> [row[0] for row in table.rows]
        ['plain', 'light step (Profiler(syncs=False), after its first window)']
    """
    model, step, label = gpt_train_step(size)
    for _ in range(5):
        step()

    def each(one: Callable[[], Any]) -> tuple[float, float]:
        """(median step wall ms, mean step CPU ms) of ``steps`` calls of ``one``."""
        walls = []
        cpu = time.process_time_ns()
        for _ in range(steps):
            began = time.perf_counter_ns()
            one()
            walls.append((time.perf_counter_ns() - began) / 1e6)
        return statistics.median(walls), (time.process_time_ns() - cpu) / 1e6 / steps

    def plain() -> tuple[float, float, float, float]:
        wall, cpu = each(step)
        return wall, cpu, 0.0, 0.0

    def light() -> tuple[float, float, float, float]:
        with torchdoctor.Profiler(model, syncs=False, window=1, period_steps=10**9,
                                  period_s=1e9) as prof:  # fmt: skip
            step()
            prof.step()  # the one detailed step
            prof.flush_steps()
            state = prof.state
            books, events = state.bookkeeping_ns, state.event_ns

            wall, cpu = each(lambda: (step(), prof.step()))
            prof.flush_steps()  # (its time is in the bookkeeping column)
            books, events = state.bookkeeping_ns - books, state.event_ns - events
        return wall, cpu, books / 1e3 / steps, events / 1e3 / steps

    name = "light step (Profiler(syncs=False), after its first window)"
    times: dict[str, list[tuple[float, float, float, float]]] = {"plain": [], name: []}
    for r in range(rounds):
        for variant, fn in ((("plain", plain), (name, light)) if r % 2 == 0
                            else ((name, light), ("plain", plain))):  # fmt: skip
            gc.collect()
            times[variant].append(fn())
    table = BenchTable(
        f"A light step vs the plain step: {label}",
        ["variant", "step ms", "x plain (wall)", "added us (wall)", "x plain (CPU)",
         "bookkeeping us", "event handlers us"],
    )  # fmt: skip
    base, values = times["plain"], times[name]
    table.add_row("plain", statistics.median(v[0] for v in base), 1.0, 0.0, 1.0, "-", "-")
    table.add_row(
        name,
        statistics.median(v[0] for v in values),
        statistics.median(v[0] / b[0] for v, b in zip(values, base)),
        1e3 * statistics.median(v[0] - b[0] for v, b in zip(values, base)),
        statistics.median(v[1] / b[1] for v, b in zip(values, base)),
        statistics.median(v[2] for v in values),
        statistics.median(v[3] for v in values),
    )
    table.notes.append(
        f"{rounds} interleaved rounds of {steps} steps (order alternated, gc.collect() before "
        "each); per round the median step (wall; CPU: the mean); 'bookkeeping' (closing the step, summarizing light "
        "steps in batches) and 'event handlers' (optimizer, backward, no_grad, DataLoader "
        "events) are what the session measured itself, per step: the rest of 'added' is what "
        "no clock inside the profiler sees (calling into its hooks, the user's code running "
        "with colder caches)"
    )
    return table

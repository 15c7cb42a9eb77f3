"""Profiler overhead on a nanoGPT-shaped GPT, long runs (suite "overhead").

The op sizes of a real GPU step: each op takes microseconds, so per-module-call costs show.
Tables:

1. Long runs (150 steps by default) of the GPT training step (``benchmarks/_gpt.py``; small:
   2 layers, width 64, batch 4; medium: 6 layers, width 256): plain vs the default
   ``Profiler(syncs=False)`` vs ``Profiler()`` with its sync audit (what ``torchdoctor run``
   does), both with detail windows (the default), and ``detail="always"`` for comparison.
   Interleaved: each round runs the whole long run of every variant in turn (order rotated);
   the overhead is the median over rounds of the per-round ratio variant / plain, from wall
   time and from process CPU time. Beside it, the session's own estimate of its overhead
   (``config.profiler_overhead.run_overhead_pct``) and its ratio to the measured one.
2. One detailed step vs the same step under ``torch.profiler`` (CPU activities), interleaved
   single steps: the profiler's full detail must cost less than torch.profiler.
3. A light step (between detail windows) vs the plain step, with what the session measured of
   it (the step bookkeeping and the phase/step event handlers): the part of the windows
   overhead every step pays.
4. The per-module-call cost of the hooks (calibrated: detailed and light steps).

Run: ``torchdoctor bench overhead`` (``--quick``: the tiny GPT, few steps and rounds).

Example:
    >>> tables = run(quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import torchdoctor
from torchdoctor.benchmarks._gpt import gpt_train_step
from torchdoctor.benchmarks.profiler_light import light_step_table
from torchdoctor.collect.lines import BACKWARD_EVERY
from torchdoctor.collect.profiler_overhead import per_module_call_cost_us
from torchdoctor.collect.schedule import FINGERPRINT_EVERY, LINES_EVERY
from torchdoctor.collect.syncs import SyncAudit
from torchdoctor.collect.syncs_overhead import per_call_cost_us
from torchdoctor.measure.compare import quantile
from torchdoctor.measure.table import BenchTable
from torchdoctor.measure.threads import intra_op_threads


def _timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[float, float, Any]:
    """(wall ms, process CPU ms, result) of one call; on a CUDA ``device`` the device's queue
    is drained before and after, so the wall time holds the kernels the call launched."""
    wait = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    wait()
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    result = fn()
    wait()
    return (time.perf_counter_ns() - wall) / 1e6, (time.process_time_ns() - cpu) / 1e6, result


def _long_run_variants(
    model: torch.nn.Module, step: Callable[[], Any], steps: int, device: str = "cpu"
) -> dict[str, Callable[[], Any]]:
    """Each returns ``(loop wall ms, loop CPU ms, session or None)``; the caller times the
    whole call too (starting and stopping the profiler included)."""

    def loop(prof: Any = None) -> None:
        for _ in range(steps):
            step()
            if prof is not None:
                prof.step()
        if prof is not None:  # the steps still waiting to be summarized (collect/step_queue.py)
            prof.flush_steps()

    def plain() -> tuple[float, float, Any]:
        wall, cpu, _ = _timed(loop, device)
        return wall, cpu, None

    def profiled(**options: Any) -> Callable[[], Any]:
        def run() -> tuple[float, float, Any]:
            with torchdoctor.Profiler(model, **options) as prof:
                wall, cpu, _ = _timed(lambda: loop(prof), device)
            return wall, cpu, prof.session

        return run

    return {
        "plain": plain,
        "Profiler(syncs=False) (windows)": profiled(syncs=False),
        "Profiler() + sync audit (windows)": profiled(syncs=True),
        "Profiler(syncs=False, detail='always')": profiled(syncs=False, detail="always"),
    }


def long_run_table(
    size: str, steps: int, rounds: int, user_code: bool = True, device: str = "cpu"
) -> BenchTable:
    """Whole long runs, interleaved: overhead per variant and the session's own estimate
    (``user_code``: the GPT loaded from a file outside torchdoctor's package, as a script's
    model is: its torch calls are timed as hot lines; else library code, whose are not;
    ``device``: ``"cuda"`` times the GPT on the GPU, each loop ending with a synchronize).

    Example:
        >>> table = long_run_table("tiny", steps=2, rounds=1)
        >>> table.columns[:3], len(table.rows)
        (['variant', 'run ms', 'x plain (wall)'], 4)
    """
    model, step, label = gpt_train_step(size, user_code=user_code, device=device)
    label += "" if user_code else " (library code: its calls are no hot lines)"
    variants = _long_run_variants(model, step, steps, device)
    for _ in range(5):
        step()  # warm-up
    per_module_call_cost_us(True, True), per_module_call_cost_us(True, False)  # calibrated once
    per_call_cost_us("function", SyncAudit)  # per process: not part of any run
    times: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in variants}
    estimates: dict[str, list[float]] = {name: [] for name in variants}
    detailed: dict[str, int] = {}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            total_wall, total_cpu, (wall, cpu, session) = _timed(variants[name], device)
            times[name].append((total_wall, total_cpu, wall, cpu))
            if session is not None:
                overhead = session["config"].get("profiler_overhead") or {}
                estimates[name].append(overhead.get("run_overhead_pct") or 0.0)
                detailed[name] = session["config"]["detail"]["detailed_count"]
    plain = times.pop("plain")
    table = BenchTable(
        f"Profiler overhead, long run of {steps} steps: {label}",
        ["variant", "run ms", "x plain (wall)", "wall q1-q3", "x plain (CPU)",
         "x plain (start+stop incl.)", "detailed steps", "estimate %", "measured % (CPU)",
         "estimate / measured"],
    )  # fmt: skip
    table.add_row("plain", statistics.median(v[2] for v in plain), 1.0, "-", 1.0, 1.0, "-", "-",
                  "-", "-")  # fmt: skip
    for name, values in times.items():
        walls = [v[2] / p[2] for v, p in zip(values, plain)]
        cpus = [v[3] / p[3] for v, p in zip(values, plain)]
        totals = [v[0] / p[0] for v, p in zip(values, plain)]
        measured = 100.0 * (statistics.median(cpus) - 1.0)
        estimate = statistics.median(estimates[name]) if estimates[name] else 0.0
        table.add_row(
            name,
            statistics.median(v[2] for v in values),
            statistics.median(walls),
            f"{quantile(walls, 0.25):.3f} to {quantile(walls, 0.75):.3f}",
            statistics.median(cpus),
            statistics.median(totals),
            detailed.get(name, "-"),
            estimate,
            measured,
            estimate / measured if measured > 0.5 else "-",
        )
    table.notes.append(
        f"{rounds} interleaved rounds (order rotated, gc.collect() before each run); x plain = "
        "median over rounds of the per-round ratio of the step loop's time; 'start+stop incl.': "
        "of the whole run, starting the profiler and building the session included (the "
        "one-time calibrations of the hook and audit costs are done before the rounds)"
    )
    table.notes.append(
        "estimate % = the session's config.profiler_overhead.run_overhead_pct (a detailed "
        "step's cost measured as mean detailed - median light step when the run has 5 of "
        "each after its first window, else the calibrated sum; + the measured step "
        "bookkeeping, relative to the steps' wall time without it); measured % = x plain (CPU) "
        "- 1, from process CPU time (other processes on a shared machine inflate it least); on "
        "an idle machine wall and CPU agree, on a loaded one compare percentages, not ms"
    )
    return table


#: detailed steps timed together: the profiler's sampling cycle (module inputs compared in
#: one detailed step of FINGERPRINT_EVERY, hot lines timed in one of LINES_EVERY, and the
#: lines' backward hooked in one of BACKWARD_EVERY of those)
CYCLE = math.lcm(FINGERPRINT_EVERY, LINES_EVERY * BACKWARD_EVERY)


def detailed_vs_torch_profiler(
    size: str, rounds: int, user_code: bool = True, device: str = "cpu"
) -> BenchTable:
    """One step in full detail vs the same step under torch.profiler, interleaved
    (``user_code``, ``device``: as in :func:`long_run_table`; on CUDA torch.profiler records
    the CPU and CUDA activities, as a user profiling a GPU step would).

    Example:
        >>> table = detailed_vs_torch_profiler("tiny", rounds=1)
        >>> [row[0] for row in table.rows][:4]
        ['off', 'torchdoctor detailed step', 'torchdoctor detailed step + sync audit', 'torch.profiler (CPU)']
    """
    model, step, label = gpt_train_step(size, user_code=user_code, device=device)
    label += "" if user_code else " (library code: its calls are no hot lines)"
    for _ in range(5):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    kind = "CPU + CUDA" if len(activities) == 2 else "CPU"

    def steps(prof: Any = None) -> None:
        for _ in range(CYCLE):
            step()
            if prof is not None:
                prof.step()

    def off() -> tuple[float, float]:
        step()
        wall, cpu, _ = _timed(steps, device)
        return wall / CYCLE, cpu / CYCLE

    def profiled(
        collection_only: bool = False, **options: Any
    ) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            with torchdoctor.Profiler(model, detail="always", **options) as prof:
                step()
                prof.step()
                prof.flush_steps()
                if collection_only:  # each step's processing (prof.step()) outside the timer
                    wall = cpu = 0.0
                    kinds: dict[bool, list[float]] = {True: [], False: []}
                    for _ in range(CYCLE):
                        timing_lines = prof._timing_lines
                        w, c, _ = _timed(step, device)
                        prof.step()
                        wall, cpu = wall + w, cpu + c
                        kinds[timing_lines].append(w)
                    for timing_lines, walls in kinds.items():  # (the rows split by kind)
                        if walls:
                            by_lines[timing_lines].append(statistics.mean(walls))
                else:  # with the summaries of the timed steps (they wait in a queue)
                    wall, cpu, _ = _timed(lambda: (steps(prof), prof.flush_steps()), device)
            return wall / CYCLE, cpu / CYCLE

        return run

    def torch_profiler(**options: Any) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            with torch.profiler.profile(activities=activities, **options):
                step()
                wall, cpu, _ = _timed(steps, device)
            return wall / CYCLE, cpu / CYCLE

        return run

    def torch_profiler_read() -> tuple[float, float]:
        profiler = torch.profiler.profile(activities=activities)
        stopped: list[bool] = []
        profiler.start()
        try:
            wall, cpu, _ = _timed(
                lambda: (steps(), profiler.stop(), stopped.append(True), profiler.key_averages()),
                device,
            )
        finally:
            if not stopped:
                profiler.stop()
        return wall / CYCLE, cpu / CYCLE

    by_lines: dict[bool, list[float]] = {True: [], False: []}  # collection only, per round
    bare = {"syncs": False, "hot_lines": False, "memory": False}
    variants = {
        "off": off,
        "torchdoctor detailed step": profiled(syncs=False),
        "torchdoctor detailed step + sync audit": profiled(syncs=True),
        f"torch.profiler ({kind})": torch_profiler(),
        "part: module tree, forward only": profiled(**bare, backward=False),
        "part: module tree, forward + backward": profiled(**bare),
        f"torch.profiler ({kind}, with_stack + with_modules)": torch_profiler(
            with_stack=True, with_modules=True
        ),
        "torchdoctor detailed step, collection only": profiled(True, syncs=False),
        f"torch.profiler ({kind}), results read (stop + key_averages)": torch_profiler_read,
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            times[name].append(variants[name]())
    base = times.pop("off")
    table = BenchTable(
        f"A detailed step vs torch.profiler: {label}",
        ["variant", "step ms", "x off (wall)", "wall q1-q3", "x off (CPU)"],
    )
    table.add_row("off", statistics.median(w for w, _ in base), 1.0, "-", 1.0)
    for name, values in times.items():
        walls = [v[0] / b[0] for v, b in zip(values, base)]
        cpus = [v[1] / b[1] for v, b in zip(values, base)]
        table.add_row(
            name,
            statistics.median(w for w, _ in values),
            statistics.median(walls),
            f"{quantile(walls, 0.25):.3f} to {quantile(walls, 0.75):.3f}",
            statistics.median(cpus),
        )
    for timing_lines, walls in by_lines.items():
        if walls and len(walls) == len(base):
            ratios = [w / b[0] for w, b in zip(walls, base)]
            table.add_row(
                f"  of which steps {'timing' if timing_lines else 'not timing'} hot lines",
                statistics.median(walls), statistics.median(ratios),
                f"{quantile(ratios, 0.25):.3f} to {quantile(ratios, 0.75):.3f}", "-",
            )  # fmt: skip
    table.notes.append(
        f"{rounds} interleaved rounds; each variant runs one untimed step, then {CYCLE} timed "
        f"ones (per step: a detailed step of {FINGERPRINT_EVERY} compares module inputs, one of "
        f"{LINES_EVERY} times hot lines and one of their {BACKWARD_EVERY} hooks the lines' "
        f"backward, so {CYCLE} in a row cost what detailed steps cost on average; 'of which': "
        "the collection-only steps by kind) "
        "(the profiled one includes its prof.step() bookkeeping and the summaries of the "
        "timed steps, which wait in a queue and are made in a batch: the steps' figures are "
        "ready after it; 'collection only': prof.step() after the timer, the summaries at "
        "stop); torch.profiler timed "
        "inside its profile() context, without the trace export ('results read': the step, "
        "then stop() and key_averages(), which the figures need); 'part': the detailed step with "
        "collectors left out (the hot lines are the rest of the full row; activation bytes "
        "are counted in the first detailed step only, the untimed one here)"
    )
    return table


def per_call_table() -> BenchTable:
    """The calibrated cost the hooks add to one module call.

    Example:
        >>> table = per_call_table()
        >>> table.columns, all(cost > 0 for row in table.rows for cost in row[1:])
        (['step kind', 'forward only (us)', 'forward + backward (us)'], True)
    """
    table = BenchTable(
        "Profiler hooks: cost per module call (calibrated, thread CPU time)",
        ["step kind", "forward only (us)", "forward + backward (us)"],
    )
    for detailed in (True, False):
        table.add_row(
            "detailed" if detailed else "light (only when steps are cut at module calls)",
            per_module_call_cost_us(False, detailed),
            per_module_call_cost_us(True, detailed),
        )
    table.notes.append(
        "a two-Linear model run with the profiler's hook functions on a scratch recorder and "
        "without, alternating; fastest of 7 rounds of 40 iterations each, per module call; "
        "light steps run without module hooks unless steps are cut at module calls "
        "(inference loops under `run`)"
    )
    return table


def run(quick: bool = False) -> list[BenchTable]:
    """The overhead tables on one intra-op thread (quick: the tiny GPT, short runs).

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("overhead"))["profiler_gpt"] is run  # `torchdoctor bench overhead` runs it
        True
    """
    with intra_op_threads(1):
        if quick:
            tables = [long_run_table("tiny", steps=12, rounds=2),
                      detailed_vs_torch_profiler("tiny", rounds=3),
                      light_step_table("tiny", rounds=2, steps=40)]  # fmt: skip
        else:
            tables = [
                long_run_table("small", steps=150, rounds=7),
                long_run_table("small", steps=150, rounds=7, user_code=False),
                long_run_table("medium", steps=150, rounds=5),
                detailed_vs_torch_profiler("small", rounds=15),
                detailed_vs_torch_profiler("small", rounds=15, user_code=False),
                light_step_table("small", rounds=15),
            ]
        tables.append(per_call_table())
    tables[0].notes.append(
        "run with torch.set_num_threads(1), as the profiler suite (per-call hook costs are "
        "single-threaded Python: more threads make the step faster and the share larger)"
    )
    return tables

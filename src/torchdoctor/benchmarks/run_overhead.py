"""End to end: ``torchdoctor run`` of a nanoGPT-style training script vs plain ``python``.

The whole process is timed (interpreter start, imports, the training, and for ``run`` the
session, lint of the script and the reports written at exit), in interleaved pairs (plain,
run, plain, run, ... with the order alternating) and the overhead is the median of the
per-pair ratios, from wall time and from the child processes' CPU time. The script is
``benchmarks/nanogpt_train.py`` (synthetic data, one intra-op thread), copied with its model
into a temporary folder of its own, as a user's project. Beside it, the
session's own estimate of its cost over the steps (``config.profiler_overhead.run_overhead_ms``
plus the sync audit's ``overhead_ms``) and the measured extra time of the whole process.

Run: ``torchdoctor bench overhead`` (``--quick``: a few iterations, one pair).

Example:
    >>> tables = run(quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torchdoctor.measure.compare import quantile
from torchdoctor.measure.table import BenchTable

SCRIPT = Path(__file__).with_name("nanogpt_train.py")


def _timed_process(command: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one process run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run_table(iters: int, pairs: int) -> BenchTable:
    """Interleaved pairs of plain and profiled runs of the script."""
    plain, profiled = [], []
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as project:
        # the script and its model in a folder of their own, as a user's project (inside
        # torchdoctor's package they would be library code, whose lines are not timed)
        script = Path(project) / SCRIPT.name
        shutil.copyfile(SCRIPT, script)
        shutil.copyfile(SCRIPT.with_name("_gpt.py"), Path(project) / "_gpt.py")
        script_args = [str(script), "--iters", str(iters)]
        plain_cmd = [sys.executable, *script_args]
        run_cmd = [sys.executable, "-m", "torchdoctor", "run", "--out", out, *script_args]
        for k in range(pairs):
            order = [("plain", plain_cmd), ("run", run_cmd)]
            for name, command in order if k % 2 == 0 else order[::-1]:
                (plain if name == "plain" else profiled).append(_timed_process(command))
            session = json.loads((Path(out) / "session.json").read_text())
            estimate = (session["config"].get("profiler_overhead") or {}).get("run_overhead_ms")
            audit = (session.get("sync_audit") or {}).get("overhead_ms") or 0.0
            steps = len(session.get("steps") or [])
            detailed = session["config"].get("detail", {}).get("detailed_count")
    extra = [r[0] - p[0] for p, r in zip(plain, profiled)]
    walls = [r[0] / p[0] for p, r in zip(plain, profiled)]
    cpus = [r[1] / p[1] for p, r in zip(plain, profiled)]
    table = BenchTable(
        f"`torchdoctor run` vs `python`, whole process: nanoGPT-style script, {iters} iterations",
        ["variant", "process s", "x plain (wall)", "wall q1-q3", "x plain (CPU)"],
    )
    table.add_row("python nanogpt_train.py", statistics.median(w for w, _ in plain), 1.0, "-", 1.0)
    table.add_row(
        "torchdoctor run nanogpt_train.py",
        statistics.median(w for w, _ in profiled),
        statistics.median(walls),
        f"{quantile(walls, 0.25):.3f} to {quantile(walls, 0.75):.3f}",
        statistics.median(cpus),
    )
    table.notes.append(
        f"{pairs} interleaved pairs (order alternating); whole processes (start-up, imports, "
        "the session, lint and reports at exit included); OMP_NUM_THREADS=1, one intra-op "
        "thread in the script"
    )
    if estimate is not None:
        table.notes.append(
            f"the last session: {steps} steps, {detailed} detailed; its own estimate of the "
            f"profiler's cost over the steps {estimate / 1e3:.3g} s + the sync audit's "
            f"{audit / 1e3:.3g} s; measured extra time of the whole process (median) "
            f"{statistics.median(extra):.3g} s"
        )
    return table


def run(quick: bool = False) -> list[BenchTable]:
    """The end-to-end table (quick: 6 iterations, one pair).

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("overhead"))["run_overhead"] is run  # `torchdoctor bench overhead` runs it
        True
    """
    return [run_table(iters=6, pairs=1) if quick else run_table(iters=1000, pairs=3)]

"""The profiler's cost on a GPU: the nanoGPT-shaped GPT's long runs and one detailed step vs
torch.profiler, on CUDA (suite "gpu", after ``gpu.py``; ``make gpu-check``).

On a GPU every step has the small GPT's op sizes on the CPU side (each kernel launch takes
microseconds), so what a module call's hooks cost shows in the step time unless the device is
the bottleneck. The tables are those of ``profiler_gpt.py`` (suite "overhead") with the model,
batch and optimizer on ``cuda``, each timed loop ending with ``torch.cuda.synchronize()``, and
torch.profiler recording the CPU and CUDA activities. Without CUDA it returns no table (the
suite's ``gpu.py`` says why).

Example:
    >>> tables = run(quick=True) if not torch.cuda.is_available() else []
    >>> tables
    []
"""

from __future__ import annotations

import torch

from torchdoctor.benchmarks.profiler_gpt import detailed_vs_torch_profiler, long_run_table
from torchdoctor.measure.table import BenchTable


def run(quick: bool = False) -> list[BenchTable]:
    """The small and medium GPT's long runs and the detailed step vs torch.profiler, on CUDA.

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("gpu"))["gpu_overhead"] is run  # `torchdoctor bench gpu` runs it
        True
    """
    if not torch.cuda.is_available():
        return []
    if quick:
        tables = [long_run_table("tiny", steps=12, rounds=2, device="cuda"),
                  detailed_vs_torch_profiler("tiny", rounds=2, device="cuda")]  # fmt: skip
    else:
        tables = [
            long_run_table("small", steps=150, rounds=5, device="cuda"),
            long_run_table("medium", steps=150, rounds=3, device="cuda"),
            detailed_vs_torch_profiler("small", rounds=7, device="cuda"),
        ]
    name = torch.cuda.get_device_name(0)
    for table in tables:
        table.title += f" [{name}]"
    tables[0].notes.append(
        "CUDA: each timed loop ends with torch.cuda.synchronize(); the CPU time is the host "
        "thread's (launches, hooks, bookkeeping), the wall time holds the kernels"
    )
    return tables

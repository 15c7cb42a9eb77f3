"""Benchmark harness: compare two callables side by side, sweep sizes, render tables.

Example:
    >>> import torch
    >>> from torchdoctor.bench import compare
    >>> r = compare(torch.sort, torch.sort, torch.randn(100), repeats=3)
    >>> r.equivalent
    True
"""

from torchdoctor.bench.compare import Comparison, compare
from torchdoctor.bench.equivalence import Equivalence, compare_outputs
from torchdoctor.bench.sweep import SweepResult, sweep
from torchdoctor.bench.table import BenchTable
from torchdoctor.bench.threads import intra_op_threads

__all__ = [
    "BenchTable",
    "Comparison",
    "Equivalence",
    "SweepResult",
    "compare",
    "compare_outputs",
    "intra_op_threads",
    "sweep",
]

"""Benchmark harness: compare two callables side by side, sweep sizes, render tables.

Example:
    >>> import torch
    >>> from torchdoctor.measure import compare
    >>> r = compare(torch.sort, torch.sort, torch.randn(100), repeats=3)
    >>> r.equivalent
    True
"""

from torchdoctor.measure.compare import Comparison, compare
from torchdoctor.measure.equivalence import Equivalence, compare_outputs
from torchdoctor.measure.sweep import SweepResult, sweep
from torchdoctor.measure.table import BenchTable
from torchdoctor.measure.threads import intra_op_threads

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

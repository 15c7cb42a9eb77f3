"""Seed 000's matching: batched ``linear_assignment`` vs the per-problem scipy loop.

The baseline is ``linear_assignment_reference``: for each problem ``.cpu()``, scipy's
``linear_sum_assignment``, and the result copied back (what the seed did per image). On CPU
tensors ``linear_assignment`` (method "auto") also uses scipy's compiled solver, with one copy
for the whole batch; the target there is <= 1.5x the loop's time. The pure-torch batched solver
(``method="torch"``, the one used on accelerators) is shown too: on a CPU it pays ~10 us per
op launch for ``K (K + 1)`` vector steps, which is why "auto" delegates to scipy there. When
a GPU is present a CUDA table compares the on-device solver with copy + scipy loop + copy back
(target >= 3x at B = 1024, K = 8).
"""

from __future__ import annotations

import torch

from torchdoctor.measure import BenchTable, compare
from torchdoctor.ops.assignment import linear_assignment
from torchdoctor.ops.reference.assignment import linear_assignment_reference


def _fast(cost: torch.Tensor):
    result = linear_assignment(cost)
    return result.columns, result.total


def _torch_path(cost: torch.Tensor):
    result = linear_assignment(cost, method="torch", check=False)
    return result.columns, result.total


def _table(device: str, batches, sizes, repeats: int) -> BenchTable:
    table = BenchTable(
        f"linear_assignment vs per-problem scipy loop ({device})",
        [
            "B",
            "K",
            "scipy loop ms",
            "linear_assignment ms",
            "speedup",
            "IQR",
            "torch solver ms",
            "torch vs loop",
            "equivalent",
        ],
    )
    generator = torch.Generator().manual_seed(0)
    for batch in batches:
        for k in sizes:
            cost = torch.rand(batch, k, k, generator=generator).to(device)
            fast = compare(
                linear_assignment_reference,
                _fast,
                cost,
                repeats=repeats,
                names=("scipy loop", "linear_assignment"),
            )
            solver = compare(
                linear_assignment_reference,
                _torch_path,
                cost,
                repeats=max(repeats // 2, 3),
                names=("scipy loop", "torch solver"),
            )
            table.add_row(
                batch,
                k,
                fast.baseline_ms,
                fast.candidate_ms,
                f"{fast.speedup:.2f}x" if fast.speedup else fast.verdict,
                f"{fast.speedup_q1:.2f}-{fast.speedup_q3:.2f}" if fast.speedup else "-",
                solver.candidate_ms,
                f"{solver.speedup:.2f}x" if solver.speedup else solver.verdict,
                bool(fast.equivalent and solver.equivalent),
            )
    return table


def run(quick: bool = False) -> list[BenchTable]:
    """Tables for ``torchdoctor bench ops``; ``quick`` uses small batches.

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("ops"))["ops_assignment"] is run  # `torchdoctor bench ops` runs it
        True
    """
    batches = (32,) if quick else (256, 1024)
    sizes = (4, 8) if quick else (4, 8, 16)
    repeats = 3 if quick else 10
    table = _table("cpu", batches, sizes, repeats)
    table.notes += [
        "speedup = scipy loop time / linear_assignment time (median of interleaved pairs); the "
        "target on CPU is >= 0.67x (linear_assignment within 1.5x of the loop).",
        "CPU 'auto' hands the tensor's memory to scipy (no copy); 'torch solver' is the "
        "vectorized shortest-augmenting-path solver used on accelerators, timed on CPU.",
        "equivalent: same columns and totals as scipy (random float costs: unique optimum).",
    ]
    tables = [table]
    if torch.cuda.is_available():
        cuda = _table("cuda", (1024,), (8,), repeats)
        cuda.notes.append("baseline: copy each problem to the host, scipy, copy back (seed 000).")
        tables.append(cuda)
    return tables

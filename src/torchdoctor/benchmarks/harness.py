"""The harness's own suite: two classic slow-step patterns against their batched cure.

It is what ``torchdoctor bench harness`` runs, and it shows the harness on real work:
- a Python loop of per-row ``linalg.solve`` against one batched solve (seed 000's pattern);
- a per-value ``torch.where`` label remap loop against ``torch.unique(return_inverse=True)``
  (seeds 002 and 003).
"""

from __future__ import annotations

import torch

from torchdoctor.measure import BenchTable, compare


def _solve_loop(cov: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.linalg.solve(cov[i], rhs[i]) for i in range(cov.shape[0])])


def _solve_batched(cov: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(cov, rhs)


def _remap_loop(labels: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(labels)
    for i, value in enumerate(sorted(set(labels.tolist()))):
        out[torch.where(labels == value)] = i
    return out


def _remap_unique(labels: torch.Tensor) -> torch.Tensor:
    return torch.unique(labels, return_inverse=True)[1]


def run(quick: bool = False) -> list[BenchTable]:
    """The harness on known cures: each loop against its batched version, interleaved.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.columns[:3]
        ['case', 'loop ms', 'batched ms']
    """
    torch.manual_seed(0)
    repeats = 5 if quick else 15
    table = BenchTable(
        "harness: slow loop vs batched cure (interleaved, median of per-pair ratios)",
        ["case", "loop ms", "batched ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    batch, dim = (64, 32) if quick else (256, 64)
    a = torch.randn(batch, dim, dim, dtype=torch.float64)
    cov = a @ a.mT + dim * torch.eye(dim, dtype=torch.float64)
    rhs = torch.randn(batch, dim, 8, dtype=torch.float64)
    result = compare(
        _solve_loop, _solve_batched, cov, rhs, repeats=repeats, names=("loop", "batched")
    )
    table.add_row(f"solve: {batch} SPD {dim}x{dim}, 8 rhs", *result.row())

    n, classes = (20_000, 50) if quick else (200_000, 500)
    labels = torch.randint(0, 10 * classes, (classes,))[torch.randint(0, classes, (n,))]
    result = compare(_remap_loop, _remap_unique, labels, repeats=repeats, names=("loop", "unique"))
    table.add_row(f"label remap: {n} labels, <= {classes} classes", *result.row())
    table.notes.append("speedup = loop time / batched time, per interleaved pair")
    return [table]

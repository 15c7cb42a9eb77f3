"""Whitened Mahalanobis vs seed 000's per-pair solve loop, batched solve and explicit inverse.

Seed sizes: B = 64 images, K = 4 parts (anchors) per image, d = 64, one covariance per image,
(B-1)*K = 252 candidates per image; then pools of 1k and 8k candidates per image. float32.

- speed: interleaved medians (``torchdoctor.measure.compare``) of
  ``pairwise_mahalanobis(anchors, pool, cov=cov, check=False)`` (Cholesky with the sync-free
  jitter ladder, whiten anchors and pool once, Euclidean distances) against each baseline.
- accuracy: covariances with condition number 1e6, float32 inputs; relative error against a
  float64 computation on the same (rounded) inputs.
"""

from __future__ import annotations

import torch

from torchdoctor.measure import BenchTable, compare, intra_op_threads
from torchdoctor.ops import pairwise_mahalanobis
from torchdoctor.ops.reference.mahalanobis import (
    pairwise_mahalanobis_batched_solve,
    pairwise_mahalanobis_inverse,
    pairwise_mahalanobis_loop,
)

_COLUMNS = ["pool per image", "baseline", "baseline ms", "whitened ms", "speedup", "spread", "IQR"]


def _problem(batch: int, parts: int, pool: int, d: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    anchors = torch.randn(batch, parts, d, generator=gen)
    candidates = torch.randn(batch, pool, d, generator=gen)
    a = torch.randn(batch, d, d, generator=gen)
    cov = a @ a.mT / d + 0.5 * torch.eye(d)
    return anchors, candidates, cov


def _whitened(anchors: torch.Tensor, pool: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return pairwise_mahalanobis(anchors, pool, cov=cov, check=False)


def _ill_conditioned(batch: int, parts: int, pool: int, d: int, cond: float, seed: int = 1):
    """Covariances Q diag(logspace(0, -log10 cond)) Q^T and points drawn from N(0, cov)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(batch, d, d, generator=gen, dtype=torch.float64))
    eigenvalues = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), d, dtype=torch.float64)
    cov = (q * eigenvalues) @ q.mT
    cov = (cov + cov.mT) / 2

    def sample(n: int) -> torch.Tensor:
        z = torch.randn(batch, n, d, generator=gen, dtype=torch.float64)
        return (z * eigenvalues.sqrt()) @ q.mT

    return sample(parts).float(), sample(pool).float(), cov.float()


def _relative_errors(out: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    rel = (out.double() - reference).abs() / reference.clamp_min(1e-300)
    return rel.max().item(), rel.median().item()


def accuracy_table(batch: int, parts: int, pool: int, d: int, cond: float = 1e6) -> BenchTable:
    """Relative error of each method in float32 against float64 on the same inputs.

    Example:
        >>> table = accuracy_table(batch=1, parts=2, pool=4, d=3)
        >>> table.columns[0], len(table.rows) > 0
        ('method', True)
    """
    anchors, candidates, cov = _ill_conditioned(batch, parts, pool, d, cond)
    chol64 = torch.linalg.cholesky(cov.double())
    reference = pairwise_mahalanobis(anchors.double(), candidates.double(), chol=chol64)
    table = BenchTable(
        f"Mahalanobis accuracy at condition number {cond:.0e} (float32, B={batch}, K={parts}, "
        f"pool {pool}, d={d})",
        ["method", "max relative error", "median relative error"],
    )
    methods = [
        ("whitened (Cholesky, torchdoctor)", _whitened),
        ("batched linalg.solve", pairwise_mahalanobis_batched_solve),
        ("explicit inverse", pairwise_mahalanobis_inverse),
    ]
    for name, fn in methods:
        table.add_row(name, *_relative_errors(fn(anchors, candidates, cov), reference))
    table.notes.append(
        "reference: float64 Cholesky whitening of the same float32-rounded inputs, so the "
        "errors are the method's own, not the rounding of the data"
    )
    return table


def speed_table(batch: int, parts: int, pools: list[int], d: int, loop_pool: int, repeats: int):
    """Interleaved times of the per-pair loop and the batched methods, per pool size.

    Example:
        >>> table = speed_table(batch=1, parts=2, pools=[4], d=3, loop_pool=4, repeats=1)
        >>> table.columns[0], len(table.rows) > 0
        ('pool per image', True)
    """
    table = BenchTable(
        f"Mahalanobis distances, one covariance per image (B={batch}, K={parts}, d={d}, float32)",
        _COLUMNS,
    )
    for pool in pools:
        anchors, candidates, cov = _problem(batch, parts, pool, d)
        baselines = [
            ("batched linalg.solve", pairwise_mahalanobis_batched_solve, repeats),
            ("explicit inverse", pairwise_mahalanobis_inverse, repeats),
        ]
        if pool == loop_pool:
            baselines.insert(0, ("per-pair solve loop (seed 000)", pairwise_mahalanobis_loop, 3))
        for name, fn, n in baselines:
            result = compare(
                fn,
                _whitened,
                anchors,
                candidates,
                cov,
                warmup=1,
                repeats=n,
                rtol=1e-3,
                atol=1e-4,
                names=(name, "whitened"),
            )
            if result.error or not result.equivalent:
                raise RuntimeError(f"Mahalanobis benchmark outputs differ: {result.summary()}")
            table.add_row(pool, name, *result.row()[:5])
    table.notes.append(
        "speedup: median over interleaved runs of baseline time / whitened time; whitened "
        "includes the Cholesky with its sync-free jitter ladder"
    )
    table.notes.append("one intra-op thread (torch.set_num_threads(1)) for both sides")
    table.notes.append("outputs checked equal within rtol 1e-3 (float32) before timing")
    return table


def run(quick: bool = False) -> list[BenchTable]:
    """Speed at the seed's sizes and pools of 1k/8k, and accuracy at condition number 1e6.

    Example:
        >>> tables = run(quick=True)
        >>> [t.columns[0] for t in tables]
        ['pool per image', 'method']
    """
    with intra_op_threads(1):  # on a shared box, intra-op parallel regions stall on busy cores
        if quick:
            speed = speed_table(batch=4, parts=2, pools=[12, 64], d=8, loop_pool=12, repeats=3)
            return [speed, accuracy_table(batch=4, parts=2, pool=12, d=8)]
        speed = speed_table(
            batch=64, parts=4, pools=[252, 1024, 8192], d=64, loop_pool=252, repeats=7
        )
        return [speed, accuracy_table(batch=64, parts=4, pool=252, d=64)]


if __name__ == "__main__":  # python -m torchdoctor.benchmarks.<name> [--quick]
    import sys

    for _table in run(quick="--quick" in sys.argv):
        print(_table.to_markdown())

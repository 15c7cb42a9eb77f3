"""Cost of the four SPD distances side by side (seed 000's SoC loss), forward and backward.

Batch 256 pairs of 64 x 64 SPD matrices (float32), the seed's d = 64. Each metric is compared,
interleaved, against ``fro`` (the seed's recommendation): the speedup column says how much
faster ``fro`` is.
"""

from __future__ import annotations

import torch

from torchdoctor.measure import BenchTable, compare, intra_op_threads
from torchdoctor.ops import SPD_METRICS, spd_distance


def _pairs(batch: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, batch, d, 2 * d, generator=gen)
    spd = x @ x.mT / (2 * d) + 0.1 * torch.eye(d)
    return spd[0], spd[1]


def _distance(metric: str):
    def call(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return spd_distance(a, b, metric=metric, check=False)

    return call


def run(quick: bool = False) -> list[BenchTable]:
    """Forward and forward+backward time of each metric vs ``fro``.

    Example:
        >>> run(quick=True)[0].rows[0][0]
        'fro'
    """
    batch, d, repeats = (8, 8, 3) if quick else (256, 64, 7)
    with intra_op_threads(1):  # on a shared box, intra-op parallel regions stall on busy cores
        a, b = _pairs(batch, d)
        table = BenchTable(
            f"SPD distances, batch {batch}, d = {d}, float32: cost relative to fro",
            [
                "metric",
                "forward ms",
                "fro forward ms",
                "fro faster by",
                "forward+backward ms",
                "fro forward+backward ms",
                "fro faster by (fwd+bwd)",
            ],
        )
        for metric in SPD_METRICS:
            forward = compare(
                _distance(metric),
                _distance("fro"),
                a,
                b,
                warmup=1,
                repeats=repeats,
                check=False,
                names=(metric, "fro"),
            )
            ga, gb = a.clone().requires_grad_(), b.clone().requires_grad_()
            both = compare(
                _distance(metric),
                _distance("fro"),
                ga,
                gb,
                warmup=1,
                repeats=repeats,
                check=False,
                grads=True,
                names=(metric, "fro"),
            )
            table.add_row(
                metric,
                forward.baseline_ms,
                forward.candidate_ms,
                f"{forward.speedup:.1f}x",
                both.baseline_ms,
                both.candidate_ms,
                f"{both.speedup:.1f}x",
            )
        table.notes += [
            "definitions as pyRiemann (distance_euclid, distance_logeuclid, distance_logdet, "
            "distance_riemann); log_euclidean: two eigh, stein: three Cholesky, "
            "affine_invariant: two Cholesky + one triangular solve + svdvals",
            "'fro faster by': median of interleaved metric time / fro time; check=False "
            "(no SPD validation, no host sync); one intra-op thread",
        ]
        return [table]


if __name__ == "__main__":  # python -m torchdoctor.benchmarks.<name> [--quick]
    import sys

    for _table in run(quick="--quick" in sys.argv):
        print(_table.to_markdown())

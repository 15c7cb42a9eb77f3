"""Batched log-domain ``sinkhorn`` vs POT's ``sinkhorn_log`` called per problem.

Both run the same number of iterations (``tol=None`` / POT ``stopThr=0``) in float64 and must
give the same plans. Needs POT (a test-only dependency); without it the table says so.
"""

from __future__ import annotations

import torch

from torchdoctor.measure import BenchTable, compare
from torchdoctor.ops.sinkhorn import sinkhorn

EPS = 0.1
ITERS = 100


def _pot_loop(cost: torch.Tensor):
    from torchdoctor.ops.reference.sinkhorn import sinkhorn_reference

    return sinkhorn_reference(cost, eps=EPS, iters=ITERS)[0]


def _batched(cost: torch.Tensor):
    return sinkhorn(cost, eps=EPS, iters=ITERS, check=False).plan


def run(quick: bool = False) -> list[BenchTable]:
    """Tables for ``torchdoctor bench ops``; ``quick`` uses a small batch.

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("ops"))["ops_sinkhorn"] is run  # `torchdoctor bench ops` runs it
        True
    """
    table = BenchTable(
        f"sinkhorn (batched, log domain) vs POT per problem, eps={EPS}, {ITERS} iterations",
        ["B", "K", "POT loop ms", "sinkhorn ms", "speedup", "IQR", "verdict"],
    )
    try:
        import ot  # noqa: F401
    except ImportError:
        table.notes.append("POT is not installed (pip install pot): comparison skipped.")
        return [table]
    generator = torch.Generator().manual_seed(0)
    cases = [(8, 16)] if quick else [(256, 16)]
    for batch, k in cases:
        cost = torch.rand(batch, k, k, generator=generator, dtype=torch.float64)
        result = compare(
            _pot_loop,
            _batched,
            cost,
            warmup=1,
            repeats=3,
            atol=1e-9,
            names=("POT loop", "sinkhorn"),
        )
        row = result.row()
        table.add_row(batch, k, row[0], row[1], row[2], row[4], result.verdict)
    table.notes.append("target: >= 10x at B = 256, K = 16. float64, uniform marginals.")
    return [table]

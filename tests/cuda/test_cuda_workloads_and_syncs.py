"""Workloads' fast variants on CUDA, and the ops' hot paths free of host syncs on a real GPU."""

from __future__ import annotations

import pytest
import torch
from cuda_device import DEVICE, require_real_cuda

from torchdoctor import ops
from torchdoctor.workloads import WORKLOADS, build

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_fast_variant_is_equivalent_on_device(name):
    workload = build(name, scale="tiny", device=DEVICE)
    workload.fast_step()
    report = workload.check_equivalence()
    assert report.equivalent, report.summary()


def _spd(batch: int, d: int) -> torch.Tensor:
    a = torch.randn(batch, d, 2 * d, generator=torch.Generator().manual_seed(0))
    return (a @ a.transpose(-1, -2) / (2 * d) + 0.1 * torch.eye(d)).to(DEVICE)


def _cases():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 5, generator=g).to(DEVICE)
    y = torch.randn(4, 7, 5, generator=g).to(DEVICE)
    cov = _spd(4, 5)
    chol = torch.linalg.cholesky(cov)
    labels_a = torch.randint(0, 3, (4, 3), generator=g).to(DEVICE)
    labels_p = torch.randint(0, 3, (4, 7), generator=g).to(DEVICE)
    ids = torch.randint(0, 3, (2, 10), generator=g).to(DEVICE)
    cost = torch.rand(16, 5, 5, generator=g).to(DEVICE)
    cost_large = torch.rand(16, 12, 12, generator=g).to(DEVICE)
    features = torch.randn(4, 20, 6, generator=g).to(DEVICE)
    return {
        "cholesky_factor": lambda: ops.cholesky_factor(cov, check=False),
        "whiten": lambda: ops.whiten(y, chol),
        "pairwise_mahalanobis": lambda: ops.pairwise_mahalanobis(x, y, chol=chol, check=False),
        "two_stage_negatives": lambda: ops.two_stage_negatives(
            x, x, y, labels_a, labels_p, chol, top_m=2, check=False
        ),
        "covariance": lambda: ops.covariance(x, shrinkage=0.1),
        "remap_labels": lambda: ops.remap_labels(labels_a),
        "group_by_segment": lambda: ops.group_by_segment(ids, num_segments=3),
        "spd_distance": lambda: [
            ops.spd_distance(cov, cov, m, check=False) for m in ops.SPD_METRICS
        ],
        "linear_assignment[auto]": lambda: ops.linear_assignment(cost, check=False),
        "linear_assignment[torch]": lambda: ops.linear_assignment(
            cost_large, method="torch", check=False
        ),
        "greedy_assignment": lambda: ops.greedy_assignment(cost),
        "sinkhorn": lambda: ops.sinkhorn(cost, iters=20, check=False),
        "dpp_greedy[torch]": lambda: ops.dpp_greedy(features=features, k=4, backend="torch"),
    }


CASES = [
    "cholesky_factor", "whiten", "pairwise_mahalanobis", "two_stage_negatives", "covariance",
    "remap_labels", "group_by_segment", "spd_distance", "linear_assignment[auto]",
    "linear_assignment[torch]", "greedy_assignment", "sinkhorn", "dpp_greedy[torch]",
]  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_op_hot_path_never_synchronizes(name):
    """``set_sync_debug_mode("error")`` raises on any synchronizing CUDA call inside the op."""
    require_real_cuda()
    call = _cases()[name]
    call()  # warm-up: lazy library loads (cuSOLVER handles) may sync once
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        call()
    finally:
        torch.cuda.set_sync_debug_mode(previous)

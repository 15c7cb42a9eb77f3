"""Device-agnostic hot paths: every op runs on the meta device with check=False.

Meta tensors have no data, so this fails if a hot path reads a value on the host (.item(),
.tolist(), a data-dependent shape) or creates a tensor on a fixed device (CPU) by mistake.
"""

from __future__ import annotations

import pytest
import torch

from torchdoctor.ops import (
    SPD_METRICS,
    CovarianceEMA,
    cholesky_factor,
    covariance,
    exhaustive_negatives,
    group_by_segment,
    mahalanobis_to_candidates,
    pad_segments,
    pairwise_mahalanobis,
    spd_distance,
    two_stage_negatives,
    whiten,
)

META = torch.device("meta")
x = torch.empty(4, 3, 5, device=META)
y = torch.empty(4, 7, 5, device=META)
cov = torch.empty(4, 5, 5, device=META)
anchor_labels = torch.empty(4, 3, dtype=torch.long, device=META)
pool_labels = torch.empty(4, 7, dtype=torch.long, device=META)
ids = torch.empty(2, 10, dtype=torch.long, device=META)

CASES = {
    "cholesky_factor": lambda: cholesky_factor(cov, check=False),
    "whiten": lambda: whiten(y, cov),
    "pairwise_mahalanobis": lambda: pairwise_mahalanobis(x, y, cov=cov, check=False),
    "mahalanobis_to_candidates": lambda: mahalanobis_to_candidates(
        x, y[:, None], cov[:, None], check=False
    ),
    "two_stage_negatives": lambda: two_stage_negatives(
        x, x, y, anchor_labels, pool_labels, cov, top_m=2, check=False
    ),
    "exhaustive_negatives": lambda: exhaustive_negatives(
        x, x, y, anchor_labels, pool_labels, cov, check=False
    ),
    "covariance": lambda: covariance(x, shrinkage=0.1),
    "CovarianceEMA": lambda: CovarianceEMA()(cov),
    "group_by_segment": lambda: group_by_segment(ids, num_segments=3),
    "pad_segments": lambda: pad_segments(
        torch.empty(2, 10, 6, device=META), ids, num_segments=3, max_len=4
    ),
    **{
        f"spd_distance[{m}]": (lambda m=m: spd_distance(cov, cov, m, check=False))
        for m in SPD_METRICS
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_hot_path_runs_on_meta_device(name):
    out = CASES[name]()
    tensors = out if isinstance(out, tuple) else (out,)
    assert all(t.device == META for t in tensors)


def test_device_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="y is on cpu but x is on meta"):
        pairwise_mahalanobis(x, torch.zeros(4, 7, 5), cov=cov)
    with pytest.raises(ValueError, match="chol is on meta but x is on cpu"):
        whiten(torch.zeros(4, 7, 5), cov)
    with pytest.raises(ValueError, match="segment_ids is on meta"):
        pad_segments(torch.zeros(2, 10), ids)
    with pytest.raises(ValueError, match="b is on cpu but a is on meta"):
        spd_distance(cov, torch.zeros(4, 5, 5), "fro")

"""Arguments of the wrong kind get an error naming the argument and what to pass, before any
torch internals see them (found by an independent oracle check of the ops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchdoctor.ops as ops

X = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
IDS = torch.tensor([0, 0, 1, 1])

NOT_A_NUMBER = {
    "jitter": lambda: ops.cholesky_factor(torch.eye(3), jitter=None),
    "shrinkage": lambda: ops.covariance(X, shrinkage="0.1"),
    "decay": lambda: ops.CovarianceEMA(decay="0.9"),
    "sinkhorn: eps": lambda: ops.sinkhorn(torch.zeros(2, 2), eps=None),
    "sinkhorn: tol": lambda: ops.sinkhorn(torch.zeros(2, 2), tol="small"),
    "dpp_greedy: eps": lambda: ops.dpp_greedy(torch.eye(3), k=1, eps=None),
    "margin": lambda: ops.exhaustive_negatives(X, X, X, IDS, IDS, torch.eye(3), margin="1"),
    "eps": lambda: ops.select_tokens_per_segment(X, IDS, 0.5, eps="a"),
    "keep_ratio": lambda: ops.select_tokens_per_segment(X, IDS, keep_ratio="half"),
    "fill": lambda: ops.pad_segments(X, IDS, fill=None),
}


@pytest.mark.parametrize("name", list(NOT_A_NUMBER))
def test_a_scalar_that_is_no_number_is_named(name):
    with pytest.raises(TypeError, match=f"^{name} must be a"):
        NOT_A_NUMBER[name]()


PER_BATCH = torch.tensor([0.1, 0.2])  # one value per problem: refused by name, not "ambiguous"
NOT_ONE_NUMBER = {
    "jitter": lambda: ops.cholesky_factor(torch.eye(3), jitter=PER_BATCH),
    "shrinkage": lambda: ops.covariance(X, shrinkage=PER_BATCH),
    "decay": lambda: ops.CovarianceEMA(decay=PER_BATCH),
    "sinkhorn: eps": lambda: ops.sinkhorn(torch.zeros(2, 2, 2), eps=PER_BATCH),
    "sinkhorn: tol": lambda: ops.sinkhorn(torch.zeros(2, 2), tol=PER_BATCH),
    "dpp_greedy: eps": lambda: ops.dpp_greedy(torch.eye(3), k=1, eps=PER_BATCH),
    "margin": lambda: ops.exhaustive_negatives(X, X, X, IDS, IDS, torch.eye(3), margin=PER_BATCH),
    "eps": lambda: ops.select_tokens_per_segment(X, IDS, 0.5, eps=PER_BATCH),
    "keep_ratio": lambda: ops.select_tokens_per_segment(X, IDS, keep_ratio=PER_BATCH),
}


@pytest.mark.parametrize("name", list(NOT_ONE_NUMBER))
def test_a_scalar_given_as_a_tensor_of_several_values_is_named(name):
    with pytest.raises(TypeError, match=f"^{name} must be a single real number .* shape \\(2,\\)"):
        NOT_ONE_NUMBER[name]()


def test_a_zero_dim_tensor_scalar_is_accepted():
    plain = ops.covariance(X, shrinkage=0.1)
    torch.testing.assert_close(ops.covariance(X, shrinkage=torch.tensor(0.1)), plain)
    ops.CovarianceEMA(decay=torch.tensor(0.9))
    ops.sinkhorn(torch.zeros(2, 2), eps=torch.tensor(0.5))


NOT_A_TENSOR = {
    "cov": lambda: ops.pairwise_mahalanobis(X, X, cov=np.eye(3, dtype=np.float32)),
    "chol": lambda: ops.pairwise_mahalanobis(X, X, chol=np.eye(3).tolist()),
    "quality": lambda: ops.dpp_greedy(torch.eye(3), k=1, quality=np.ones(3, np.float32)),
    "mask": lambda: ops.dpp_greedy(torch.eye(3), k=1, mask=[True, True, False]),
}


@pytest.mark.parametrize("name", list(NOT_A_TENSOR))
def test_an_optional_tensor_given_as_an_array_or_list_is_named_before_its_device(name):
    """Not "cov is on cpu but x is on cpu", nor an AttributeError on ``.device``."""
    with pytest.raises(TypeError, match=f"^{name} must be a torch.Tensor, got"):
        NOT_A_TENSOR[name]()


def test_select_tokens_quality_as_a_list_is_named():
    with pytest.raises(TypeError, match="^quality must be a torch.Tensor, got list"):
        ops.select_tokens_per_segment(X, IDS, 0.5, quality=[1.0, 2.0, 3.0, 4.0])


def test_wide_unsigned_ids_work_as_int64_ones_and_values_are_refused_by_name():
    """torch compares and reduces no uint16/32/64 tensor on the CPU: ids are widened (the
    result is the same as for int64 ids); values, which the op moves, are refused clearly."""
    ids = torch.tensor([1, 0, 1], dtype=torch.uint32)
    for got, want in zip(ops.group_by_segment(ids), ops.group_by_segment(ids.long())):
        assert torch.equal(got, want)
    features, quality = torch.randn(3, 2), torch.rand(3)
    for method, backend in (("topk", "auto"), ("dpp", "torch"), ("dpp", "auto")):
        got = ops.select_tokens_per_segment(features, ids, keep_per_segment=1, quality=quality,
                                            method=method, backend=backend)  # fmt: skip
        want = ops.select_tokens_per_segment(features, ids.long(), keep_per_segment=1,
                                             quality=quality, method=method, backend=backend)  # fmt: skip
        assert torch.equal(got, want), (method, backend)
    kernels = torch.eye(3).expand(2, 3, 3)
    wide = ops.dpp_greedy(kernels, k=torch.tensor([1, 2], dtype=torch.uint32))
    assert torch.equal(wide.indices, ops.dpp_greedy(kernels, k=torch.tensor([1, 2])).indices)
    with pytest.raises(TypeError, match=r"^values has dtype torch.uint32.*values.long\(\)"):
        ops.pad_segments(torch.arange(3).to(torch.uint32), ids.long())


def test_candidates_against_a_chol_of_another_batch_name_the_arguments_given():
    with pytest.raises(ValueError, match=r"anchor and candidates \(2,\) and chol \(5,\)"):
        ops.mahalanobis_to_candidates(
            torch.zeros(2, 3), torch.zeros(2, 4, 3), torch.eye(3).expand(5, 3, 3)
        )


META = {
    "labels": lambda m: ops.remap_labels(torch.tensor([3, 1], device=m)),
    "features": lambda m: ops.select_tokens_per_segment(X.to(m), IDS.to(m), keep_per_segment=1),
    "cov": lambda m: ops.cholesky_factor(torch.eye(3, device=m)),
    "x": lambda m: ops.covariance(X.to(m), check=True),
    "a": lambda m: ops.spd_distance(torch.eye(2, device=m), torch.eye(2, device=m), "stein"),
    "cost": lambda m: ops.sinkhorn(torch.zeros(2, 2, device=m)),
}


@pytest.mark.parametrize("name", list(META))
def test_a_meta_tensor_where_values_are_read_is_named(name):
    with pytest.raises(ValueError, match=f"^{name} needs real data; got a meta tensor"):
        META[name]("meta")


def test_huge_and_complex_scalars_get_named_errors_or_are_clamped():
    padded, _ = ops.pad_segments(torch.zeros(3), torch.tensor([0, 0, 1]), fill=2**70)
    assert padded[1, 1].item() == float(2**70)
    with pytest.raises(ValueError, match=r"^pad_segments: fill=1j is complex"):
        ops.pad_segments(torch.zeros(3), torch.tensor([0, 0, 1]), fill=1j)
    features, ids = torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, -1])
    everything = ops.select_tokens_per_segment(features, ids, keep_per_segment=2**63)
    assert everything.tolist() == list(range(6))  # more than c is clamped, past int64 too
    assert ops.dpp_greedy(torch.eye(3), k=2**63).indices.tolist() == [0, 1, 2]

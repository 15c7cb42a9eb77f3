"""Third oracle round: the ops against references written from their definitions, in float64
NumPy, at magnitudes where float32 squares overflow or underflow although the results fit.

Each case failed before its fix (the ops returned inf or 0, or ranked at random).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchdoctor.ops import (
    covariance,
    exhaustive_negatives,
    mahalanobis_to_candidates,
    pairwise_mahalanobis,
    two_stage_negatives,
)


def _np_covariance(x: np.ndarray, ddof: int, shrinkage: float = 0.0) -> np.ndarray:
    """float64 covariance of rows (samples) straight from the definition."""
    centered = x - x.mean(0)
    cov = centered.T @ centered / (x.shape[0] - ddof)
    d = cov.shape[0]
    return (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)


@pytest.mark.parametrize("scale", [1e19, 1.2e19])
@pytest.mark.parametrize("shrinkage", [0.0, 0.5])
def test_covariance_float32_extreme_magnitudes_match_float64(scale, shrinkage):
    # x ~ 1e19 in float32: every covariance entry (up to ~2e38) fits float32, but the sum of
    # squares before the division by n - 1, and cov + cov.mT, overflowed to inf.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g) * scale
    want = _np_covariance(x.double().numpy(), ddof=1, shrinkage=shrinkage)
    assert np.abs(want).max() < torch.finfo(torch.float32).max  # the answer fits float32
    got = covariance(x, shrinkage=shrinkage)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(
        got.double().numpy(), want, rtol=1e-5, atol=1e-6 * np.abs(want).max()
    )


def test_covariance_rescaling_changes_nothing_in_range():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    for shrinkage in (0.0, 0.3):
        centered = x - x.mean(-2, keepdim=True)
        cov = centered.mT @ centered / 6
        cov = (cov + cov.mT) / 2
        if shrinkage:
            target = cov.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None]
            cov = (1 - shrinkage) * cov + shrinkage * target * torch.eye(4, dtype=x.dtype)
        assert torch.equal(covariance(x, shrinkage=shrinkage), cov)  # bit for bit


def test_covariance_gradient_with_rescaling():
    x = (torch.randn(2, 5, 3, dtype=torch.float64) * 1e-3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: covariance(x, shrinkage=0.2), (x,))


def _np_mahalanobis(x: np.ndarray, y: np.ndarray, cov: np.ndarray) -> np.ndarray:
    inverse = np.linalg.inv(cov)
    diff = x[:, None, :] - y[None, :, :]
    return np.sqrt(np.einsum("nmi,ij,nmj->nm", diff, inverse, diff))


@pytest.mark.parametrize("scale", [2.0**70, 1e25, 1e-25, 2.0**-80])
def test_mahalanobis_float32_extreme_magnitudes_match_float64(scale):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, generator=g) * scale
    y = torch.randn(5, 4, generator=g) * scale
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    cov64 = a @ a.T + 4 * torch.eye(4, dtype=torch.float64)
    want = _np_mahalanobis(x.double().numpy(), y.double().numpy(), cov64.numpy())
    cov = cov64.float()
    got = pairwise_mahalanobis(x, y, cov=cov)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-4)
    chol = torch.linalg.cholesky(cov)
    to_candidates = mahalanobis_to_candidates(x, y.expand(3, 5, 4), chol)
    np.testing.assert_allclose(to_candidates.double().numpy(), want, rtol=1e-4)


def test_mahalanobis_rescaling_keeps_nan_inf_local_and_gradients():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 0.0], [float("nan"), 0.0], [float("inf"), 0.0]], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    got = pairwise_mahalanobis(x, y, chol=eye, check=False)
    assert got[:, 0].tolist() == [5.0, 1.0]
    for dtype, tiny in ((torch.float32, 1e-25), (torch.float64, 1e-200)):  # against the origin
        at_zero = pairwise_mahalanobis(x.to(dtype) * tiny, y[:1].to(dtype), chol=eye.to(dtype))
        assert torch.allclose(at_zero[:, 0].double(), torch.tensor([5.0, 1.0]).double() * tiny)
    assert not got[:, 1:].isfinite().any()  # (an inf point whitens to NaN: 0 * inf)
    near = mahalanobis_to_candidates(x[0], y, eye, check=False)
    assert near[0].item() == 5.0 and not near[1:].isfinite().any()
    xs = (torch.randn(3, 2, dtype=torch.float64) * 1e-30).requires_grad_()
    ys = torch.randn(4, 2, dtype=torch.float64) * 1e-30
    assert torch.autograd.gradcheck(
        lambda x: pairwise_mahalanobis(x, ys, chol=eye, check=False) * 1e30, (xs,), eps=1e-36
    )
    assert torch.autograd.gradcheck(
        lambda x: mahalanobis_to_candidates(x, ys.expand(3, 4, 2), eye, check=False) * 1e30,
        (xs,),
        eps=1e-36,
    )


@pytest.mark.parametrize("power", [80, -80])
def test_mining_is_invariant_to_a_power_of_two_scale_in_float32(power):
    # Scaling every input by 2**k (exact) must not change the choice. At 2**80 the squared
    # distances overflowed (inf everywhere: the hardest was the smallest index); at 2**-80 the
    # cosine prefilter's norms underflowed (rows not normalized: a random top-M).
    g = torch.Generator().manual_seed(3)
    anchors, positives = torch.randn(2, 6, 5, generator=g), torch.randn(2, 6, 5, generator=g)
    pool = torch.randn(2, 30, 5, generator=g) * torch.rand(2, 30, 1, generator=g) * 4
    anchor_labels = torch.randint(0, 3, (2, 6), generator=g)
    pool_labels = torch.randint(0, 3, (2, 30), generator=g)
    chol = torch.eye(5).expand(2, 5, 5)
    s = 2.0**power
    for mine, extra in ((exhaustive_negatives, {}), (two_stage_negatives, {"top_m": 4})):
        for mode in ("semihard", "hard"):
            base = mine(anchors, positives, pool, anchor_labels, pool_labels, chol,
                        mode=mode, **extra)  # fmt: skip
            scaled = mine(anchors * s, positives * s, pool * s, anchor_labels, pool_labels,
                          chol, margin=s, mode=mode, **extra)  # fmt: skip
            assert torch.equal(scaled.indices, base.indices), (mine.__name__, mode)
            torch.testing.assert_close(scaled.distances / s, base.distances)

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ops1_helpers import count_syncs

from torchdoctor.ops import SPD_METRICS, CovarianceEMA, covariance, spd_distance, spd_log

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pyriemann.utils import distance as riemann_distance

PYRIEMANN = {
    "fro": riemann_distance.distance_euclid,
    "log_euclidean": riemann_distance.distance_logeuclid,
    "stein": riemann_distance.distance_logdet,
    "affine_invariant": riemann_distance.distance_riemann,
}


def random_spd(batch, d, gen, dtype=torch.float64, repeated=False):
    if repeated:  # repeated eigenvalues: multiples of the identity
        scale = torch.rand(*batch, 1, 1, generator=gen, dtype=dtype) + 0.5
        return scale * torch.eye(d, dtype=dtype)
    x = torch.randn(*batch, d, d, generator=gen, dtype=dtype)
    return x @ x.mT / d + 0.1 * torch.eye(d, dtype=dtype)


def symmetrize(x):
    return (x + x.mT) / 2


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    metric=st.sampled_from(SPD_METRICS),
    batch=st.sampled_from([(), (1,), (3,), (2, 2)]),
    d=st.integers(1, 6),
    repeated=st.booleans(),
    same=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_pyriemann_float64(metric, batch, d, repeated, same, seed):
    gen = torch.Generator().manual_seed(seed)
    a = random_spd(batch, d, gen, repeated=repeated)
    b = a.clone() if same else random_spd(batch, d, gen)
    got = spd_distance(a, b, metric=metric)
    assert got.shape == batch and got.dtype == torch.float64
    flat_a, flat_b = a.reshape(-1, d, d).numpy(), b.reshape(-1, d, d).numpy()
    expected = np.array([PYRIEMANN[metric](x, y) for x, y in zip(flat_a, flat_b)])
    expected = torch.from_numpy(expected).reshape(batch)
    if same:  # at a == b pyRiemann's own rounding leaves up to ~sqrt(eps * cond); ours is exact
        assert (expected < 1e-5).all()
        assert (got == 0).all() if metric != "affine_invariant" else (got < 1e-7).all()
    else:
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("metric", SPD_METRICS)
def test_gradcheck_and_finite_gradient_at_equal_inputs(metric):
    gen = torch.Generator().manual_seed(1)
    a, b = random_spd((2,), 3, gen), random_spd((2,), 3, gen)
    inputs = (a.clone().requires_grad_(), b.clone().requires_grad_())
    assert torch.autograd.gradcheck(
        lambda x, y: spd_distance(symmetrize(x), symmetrize(y), metric), inputs
    )
    for pair in [(a, a.clone()), (torch.eye(3).double(), 2 * torch.eye(3).double())]:
        x, y = (t.clone().requires_grad_() for t in pair)
        spd_distance(x, y, metric).sum().backward()
        assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_gradient_is_zero_at_equal_inputs_for_exact_metrics():
    a = random_spd((2,), 4, torch.Generator().manual_seed(2))
    for metric in ("fro", "log_euclidean", "stein"):
        x = a.clone().requires_grad_()
        spd_distance(x, a, metric).sum().backward()
        assert torch.count_nonzero(x.grad) == 0


def test_spd_log_gradient_matches_finite_differences_with_repeated_eigenvalues():
    a = torch.diag(torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: spd_log(symmetrize(x)), (a,))


def test_hot_path_has_no_sync_and_checked_path_one():
    gen = torch.Generator().manual_seed(3)
    a, b = random_spd((16,), 8, gen, torch.float32), random_spd((16,), 8, gen, torch.float32)
    for metric in SPD_METRICS:
        with count_syncs() as syncs:
            out = spd_distance(a, b, metric, check=False)
        assert syncs.total == 0 and out.dtype == torch.float32
        with count_syncs() as syncs:
            spd_distance(a, b, metric)
        assert syncs.total == 1


def test_spd_errors_name_batch_index_and_smallest_eigenvalue():
    a = torch.eye(2, dtype=torch.float64).repeat(3, 1, 1)
    b = a.clone()
    b[2] = torch.diag(torch.tensor([1.0, -0.5], dtype=torch.float64))
    with pytest.raises(
        ValueError,
        match=r"b is not symmetric positive definite at batch index \(2,\): smallest eigenvalue -5\.000e-01",
    ):
        spd_distance(a, b, "stein")
    assert torch.isfinite(spd_distance(a, b, "fro"))[2]
    with pytest.raises(ValueError, match="metric must be one of"):
        spd_distance(a, b, "cosine")
    with pytest.raises(ValueError, match="a contains non-finite"):
        spd_distance(a * float("inf"), b, "fro")
    with pytest.raises(ValueError, match="size 2"):
        spd_distance(a, torch.eye(3, dtype=torch.float64), "fro")


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    batch=st.sampled_from([(), (1,), (3,)]),
    n=st.integers(2, 7),
    d=st.integers(1, 5),
    shrinkage=st.sampled_from([0.0, 0.3, 1.0]),
    unbiased=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_covariance_matches_numpy(batch, n, d, shrinkage, unbiased, seed):
    x = torch.randn(
        *batch, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    got = covariance(x, shrinkage=shrinkage, unbiased=unbiased)
    flat = x.reshape(-1, n, d).numpy()
    expected = []
    for sample in flat:
        s = np.atleast_2d(np.cov(sample, rowvar=False, ddof=1 if unbiased else 0))
        expected.append((1 - shrinkage) * s + shrinkage * np.trace(s) / d * np.eye(d))
    torch.testing.assert_close(got, torch.from_numpy(np.stack(expected)).reshape(*batch, d, d))


def test_covariance_shrinkage_makes_few_samples_spd_and_rejects_bad_input():
    x = torch.randn(8, 4, 64, generator=torch.Generator().manual_seed(4))  # K=4 parts, d=64
    assert (torch.linalg.cholesky_ex(covariance(x)).info != 0).all()
    assert (torch.linalg.cholesky_ex(covariance(x, shrinkage=0.1)).info == 0).all()
    with pytest.raises(ValueError, match="at least 2 samples"):
        covariance(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="shrinkage must be in"):
        covariance(torch.zeros(3, 3), shrinkage=2.0)


def test_covariance_ema_bias_correction_state_and_no_sync():
    gen = torch.Generator().manual_seed(5)
    covs = [random_spd((2,), 3, gen, torch.float32) for _ in range(4)]
    ema = CovarianceEMA(decay=0.8)
    with count_syncs() as syncs:
        for c in covs:
            ema.update(c)
        value = ema.value()
    assert syncs.total == 0
    weights = [0.2 * 0.8 ** (3 - i) for i in range(4)]
    expected = sum(w * c for w, c in zip(weights, covs)) / (1 - 0.8**4)
    torch.testing.assert_close(value, expected)
    first = CovarianceEMA(decay=0.8)
    first.update(covs[0])
    torch.testing.assert_close(first.value(), covs[0])
    restored = CovarianceEMA(decay=0.8)
    restored.load_state_dict(ema.state_dict())
    torch.testing.assert_close(restored.value(), value)
    assert ema.average.device == covs[0].device
    with pytest.raises(ValueError, match="averages shape"):
        ema.update(torch.eye(4))
    with pytest.raises(ValueError, match="no value yet"):
        CovarianceEMA().value()


def test_covariance_gradcheck_and_no_sync():
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda t: covariance(t, shrinkage=0.2), (x.clone().requires_grad_(),)
    )
    with count_syncs() as syncs:
        out = covariance(x.float(), shrinkage=0.2)
    assert syncs.total == 0 and out.dtype == torch.float32

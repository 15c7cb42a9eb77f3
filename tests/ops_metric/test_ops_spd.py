from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchdoctor.ops import SPD_METRICS, CovarianceEMA, covariance, spd_distance, spd_log
from torchdoctor.testing import count_host_syncs

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
        with count_host_syncs() as syncs:
            out = spd_distance(a, b, metric, check=False)
        assert syncs.count == 0 and out.dtype == torch.float32
        with count_host_syncs() as syncs:
            spd_distance(a, b, metric)
        assert syncs.count == 1


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
    with count_host_syncs() as syncs:
        for c in covs:
            ema.update(c)
        value = ema.value()
    assert syncs.count == 0
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
    with count_host_syncs() as syncs:
        out = covariance(x.float(), shrinkage=0.2)
    assert syncs.count == 0 and out.dtype == torch.float32


def _ill_conditioned_float32(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
    a = (q * np.asarray(eigenvalues)) @ q.T
    return torch.tensor((a + a.T) / 2, dtype=torch.float32)


@pytest.mark.parametrize("metric", SPD_METRICS)
def test_nan_and_non_spd_inputs_give_nan_never_zero(metric):
    eye = torch.eye(2, dtype=torch.float64)
    nan = torch.tensor([[float("nan"), 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert spd_distance(eye, nan, metric, check=False).isnan()
    assert spd_distance(nan, eye, metric, check=False).isnan()
    if metric != "fro":  # non-SPD gives NaN with check=False (check=True raises)
        indefinite = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
        for a, b in [(eye, indefinite), (indefinite, eye), (-eye, 2 * eye), (eye, 0 * eye)]:
            assert spd_distance(a, b, metric, check=False).isnan()
            with pytest.raises(ValueError, match="not symmetric positive definite"):
                spd_distance(a, b, metric)
    # a NaN in one batch element leaves the others (and their gradients) alone
    a = torch.stack([eye, nan]).requires_grad_()
    out = spd_distance(a, 2 * eye, metric, check=False)
    assert out[0] > 0 and out[1].isnan()
    out[0].backward()
    assert torch.isfinite(a.grad[0]).all()


def test_spd_log_of_non_spd_is_nan():
    assert spd_log(torch.diag(torch.tensor([1.0, -1.0]))).isnan().all()
    assert spd_log(torch.zeros(2, 2)).isnan().all()


def test_float32_ill_conditioned_spd_gives_finite_nonzero_distances():
    # passes the float32 SPD check; eigenvalue 1e-8 is below float32's eps * lambda_max
    a = _ill_conditioned_float32([1.0, 1e-4, 1e-8])
    assert torch.linalg.cholesky_ex(a).info == 0
    got = spd_distance(a, torch.eye(3), "log_euclidean").item()
    expected = PYRIEMANN["log_euclidean"](a.double().numpy(), np.eye(3))  # 20.6
    # raised to eps * lambda_max = 1.2e-7: log 1.2e-7 instead of log 1.5e-8 (documented)
    assert 0.85 * expected < got <= expected
    rng = np.random.default_rng(1)
    for seed in range(40):  # condition numbers 1e6: affine_invariant was 0 in ~37% of these
        d = int(rng.choice([2, 3, 5, 8]))
        a = _ill_conditioned_float32(np.logspace(0, -6, d) * rng.choice([1e-3, 1, 100]), seed)
        b = _ill_conditioned_float32(np.logspace(0, -6, d) * rng.choice([1e-3, 1, 100]), seed + 99)
        for metric, rtol in [("log_euclidean", 2e-2), ("stein", 1e-2), ("affine_invariant", 1e-2)]:
            got = spd_distance(a, b, metric).item()
            expected = PYRIEMANN[metric](a.double().numpy(), b.double().numpy())
            assert got == pytest.approx(expected, rel=rtol), (metric, seed)


def test_affine_invariant_float64_accuracy_at_high_condition_numbers():
    # sigma(L_A^-1 L_B) never forms L_A^-1 B L_A^-T: rounding no longer grows with cond(A)
    a = _ill_conditioned_float32([1.0, 1e-3, 1e-6], seed=3).double()
    b = _ill_conditioned_float32([1.0, 1e-2, 1e-6], seed=4).double()
    la, lb = np.linalg.cholesky(a.numpy()), np.linalg.cholesky(b.numpy())
    singular = np.linalg.svd(np.linalg.solve(la, lb), compute_uv=False)
    expected = np.sqrt(np.sum((2 * np.log(singular)) ** 2))
    assert spd_distance(a, b, "affine_invariant").item() == pytest.approx(expected, rel=1e-10)


def test_spd_log_second_derivatives_match_torch_eigh():
    gen = torch.Generator().manual_seed(7)
    a = random_spd((2,), 3, gen)
    assert torch.autograd.gradgradcheck(
        lambda x: spd_log(symmetrize(x)), (a.clone().requires_grad_(),)
    )
    for metric in ("log_euclidean", "affine_invariant"):
        assert torch.autograd.gradgradcheck(
            lambda x, y, metric=metric: spd_distance(symmetrize(x), symmetrize(y), metric),
            (a.clone().requires_grad_(), random_spd((2,), 3, gen).requires_grad_()),
        )

    def reference(x):
        w, v = torch.linalg.eigh(symmetrize(x))
        return ((v * w.log().unsqueeze(-2)) @ v.mT).pow(2).sum()

    direction = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64)
    products = []
    for f in (lambda x: spd_log(symmetrize(x)).pow(2).sum(), reference):
        x = a.clone().requires_grad_()
        (grad,) = torch.autograd.grad(f(x), x, create_graph=True)
        products.append(torch.autograd.grad((grad * direction).sum(), x)[0])
    torch.testing.assert_close(products[0], products[1])
    # first derivatives stay finite at repeated eigenvalues, also with create_graph=True
    x = torch.eye(3, dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(spd_log(2 * x).sum(), x, create_graph=True)
    torch.testing.assert_close(grad, torch.ones(3, 3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_spd_log_half_precision_is_computed_in_float32(dtype):
    a = random_spd((2,), 3, torch.Generator().manual_seed(8), torch.float32).to(dtype)
    x = a.clone().requires_grad_()
    out = spd_log(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out, spd_log(a.float()).to(dtype))
    out.sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("decay", [0.9, 0.999, 0.9999, 0.999999])
def test_covariance_ema_bias_correction_in_every_dtype(dtype, decay):
    cov = random_spd((2,), 3, torch.Generator().manual_seed(9), torch.float32).to(dtype)
    ema = CovarianceEMA(decay=decay)
    with count_host_syncs() as syncs:
        ema.update(cov)
        first = ema.value()
        for _ in range(5):
            ema.update(cov)
        value = ema.value()
    assert syncs.count == 0 and value.dtype == dtype
    assert torch.equal(first, cov)  # the first value is the first update, exactly
    assert torch.equal(value, cov)  # a constant input stays constant
    ema.update(2 * cov)  # then moves by (1 - decay) / (1 - decay**7) toward the new input
    weight = (1 - decay) / (1 - decay**7)
    expected = (cov.double() * (1 + weight)).to(dtype)
    torch.testing.assert_close(ema.value(), expected)


def test_covariance_ema_half_conversion_and_old_state_dicts():
    cov = random_spd((), 3, torch.Generator().manual_seed(10), torch.float32)
    ema = CovarianceEMA(decay=0.99)
    ema.update(cov)
    ema.half()
    for _ in range(3):
        ema.update(cov)
    assert ema.average.dtype == torch.float16
    assert torch.equal(ema.value(), cov.half())
    # a state dict saved before version 2 holds the raw average decay-weighted from zero
    new = CovarianceEMA(decay=0.8)
    for scale in (1.0, 2.0, 5.0):
        new.update(scale * cov)
    state = new.state_dict()
    old = type(state)(state)
    old._metadata = {"": {"version": 1}}
    old["average"] = new.value() * (1 - 0.8**3)
    restored = CovarianceEMA(decay=0.8)
    restored.load_state_dict(old)
    torch.testing.assert_close(restored.value(), new.value())
    for current in (state, dict(state)):  # with and without metadata (e.g. safetensors)
        restored = CovarianceEMA(decay=0.8)
        restored.load_state_dict(current)
        assert torch.equal(restored.value(), new.value())

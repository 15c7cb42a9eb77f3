from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from torchdoctor.ops import cholesky_factor, pairwise_mahalanobis, spd_distance, spd_log


def _ill_conditioned_float32() -> torch.Tensor:
    """A float32 matrix that is SPD exactly (float64 eigenvalues all > 0) yet fails a float32
    Cholesky factorization: eigenvalues 1 .. 1e-9 (the tester's repro, seed 0)."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    eigenvalues = torch.tensor([1, 1e-3, 1e-6, 1e-9], dtype=torch.float64)
    b = (q @ torch.diag(eigenvalues) @ q.T).float()
    b = (b + b.T) / 2
    assert torch.linalg.eigvalsh(b.double()).min() > 0
    assert torch.linalg.cholesky_ex(b).info > 0
    return b


def test_an_spd_but_ill_conditioned_matrix_is_not_called_non_spd():
    """The check once said "not symmetric positive definite: smallest eigenvalue 2.858e-09"."""
    b = _ill_conditioned_float32()
    eye = torch.eye(4)
    honest = r"Cholesky factorization of {} \(the single matrix\) failed in torch\.float32"
    cond = r"ill-conditioned \(condition number ~\d\.\de\+08\)"
    for metric in ("log_euclidean", "stein", "affine_invariant"):
        with pytest.raises(ValueError, match=honest.format("a")) as error:
            spd_distance(b, eye, metric=metric)
        message = str(error.value)
        assert "not symmetric positive definite" not in message
        assert "positive, 2.858e-09" in message and "a.double()" in message
        assert ("check=False" in message) == (metric == "log_euclidean")
        assert "jitter" in message
        with pytest.raises(ValueError, match=cond):
            spd_distance(eye, b, metric=metric)  # named b when it is the second argument
    assert math.isfinite(spd_distance(b, eye, metric="log_euclidean", check=False).item())
    assert math.isfinite(spd_distance(b.double(), eye.double(), metric="stein").item())
    with pytest.raises(ValueError, match=honest.format("cov")) as error:
        cholesky_factor(b, max_tries=0)
    assert "max_tries" in str(error.value) and "cov.double()" in str(error.value)
    chol, added = cholesky_factor(b)  # the default jitter ladder factors it
    assert added.item() > 0 and torch.isfinite(chol).all()


def test_a_matrix_that_is_not_spd_is_still_rejected_as_such():
    bad = torch.diag(torch.tensor([1.0, -1e-9, 2.0]))
    with pytest.raises(ValueError, match=r"a is not symmetric positive definite .*-1\.000e-09"):
        spd_distance(bad, torch.eye(3), metric="log_euclidean")
    with pytest.raises(ValueError, match=r"cov is not symmetric positive definite"):
        cholesky_factor(bad, max_tries=0)


def test_nan_and_inf_inputs_give_nan_for_their_batch_element_only():
    m = torch.tensor([[2.0, 0.5, 0.3], [0.5, 1.5, 0.2], [0.3, 0.2, 1.0]], dtype=torch.float64)
    a = torch.stack([2 * torch.eye(3, dtype=torch.float64), m])
    a[1, 0, 0] = math.nan
    a.requires_grad_()
    eye = torch.eye(3, dtype=torch.float64)
    for metric in ("log_euclidean", "stein", "affine_invariant"):  # eigh raised on the NaN
        got = spd_distance(a, eye, metric, check=False)
        assert math.isfinite(got[0].item()) and math.isnan(got[1].item())
        if metric != "stein":
            assert math.isclose(got[0].item(), 3**0.5 * math.log(2), rel_tol=1e-9)
    logs = spd_log(a)
    torch.testing.assert_close(logs[0].detach(), math.log(2) * eye)
    assert logs[1].isnan().all()
    logs[0].sum().backward()
    assert torch.isfinite(a.grad[0]).all()
    big = torch.diag(torch.tensor([math.inf, 1.0, 1.0], dtype=torch.float64))
    for metric in ("log_euclidean", "stein", "affine_invariant"):  # not a made-up 1416.79
        forward = spd_distance(big, eye, metric, check=False).item()
        backward = spd_distance(eye, big, metric, check=False).item()
        assert math.isnan(forward) and math.isnan(backward), metric


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stein_of_matrices_near_the_largest_float_does_not_overflow(dtype):
    # (a + b) / 2 overflowed to inf for entries above half the largest float: NaN, not 0
    big = 0.9 * torch.finfo(dtype).max
    a = torch.diag(torch.tensor([big, big / 4], dtype=dtype))
    assert spd_distance(a, a, "stein").item() == 0.0
    b = torch.diag(torch.tensor([big / 8, big / 4], dtype=dtype))
    want = math.sqrt(math.log(4.5 / 8) - 0.5 * math.log(1 / 8))  # (1 + 1/8)/2 = 4.5/8
    assert spd_distance(a, b, "stein").item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("metric", ["log_euclidean", "stein", "affine_invariant"])
def test_a_matrix_that_is_not_symmetric_is_named_not_read_by_one_triangle(metric):
    """The factorizations read one triangle: an upper-triangular mistake (a transposed product,
    a matrix filled row by row) gave the distance of another matrix, with no error."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    spd = x.mT @ x / 6 + 0.1 * torch.eye(4, dtype=torch.float64)
    rounded = spd @ torch.eye(4, dtype=torch.float64) * (1 + 1e-12)  # rounding: still symmetric
    skewed = spd.clone()
    skewed[2, 0, 3] += 0.5  # batch index 2, above the diagonal only
    assert torch.isfinite(spd_distance(rounded, spd, metric=metric)).all()
    with pytest.raises(ValueError, match=r"a is not symmetric at batch index \(2,\)"):
        spd_distance(skewed, spd, metric=metric)
    with pytest.raises(ValueError, match=r"b is not symmetric .* \(\(b \+ b\.mT\) / 2\)"):
        spd_distance(spd, skewed, metric=metric)
    assert torch.isfinite(spd_distance(skewed, spd, metric=metric, check=False)).all()  # no sync
    assert torch.isfinite(spd_distance(skewed, spd, metric="fro")).all()  # any matrices there


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_products_symmetric_up_to_the_rounding_they_were_made_in_pass(dtype):
    """x @ m @ x.T + I made in half precision differs from its transpose by a few ulps of that
    precision; a float32 product passed on as float64 (as the errors suggest) by float32's:
    the symmetry check took them for non-symmetric matrices (oracle round 5)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 6, 6, generator=g).to(dtype)
    m = torch.randn(50, 6, 6, generator=g).to(dtype)
    made = x @ (m @ m.mT) @ x.mT + torch.eye(6, dtype=dtype)
    assert torch.isfinite(spd_distance(made, made, metric="log_euclidean")).all()
    if dtype == torch.float32:
        wide = made.double()
        assert (wide - wide.mT).abs().max() > 0  # (not symmetric to float64's rounding)
        assert torch.isfinite(spd_distance(wide, wide, metric="stein")).all()


@pytest.mark.parametrize("metric", ["log_euclidean", "stein", "affine_invariant"])
def test_empty_matrices_are_checked_as_the_other_paths_take_them(metric):
    empty = torch.zeros(2, 0, 0)
    assert spd_distance(empty, empty, metric=metric).tolist() == \
        spd_distance(empty, empty, metric=metric, check=False).tolist()


def _stein_reference(a, b):
    """float64 stein from the generalized eigenvalues l of (b, a), per eigenvalue without
    cancellation: log((1 + l) / (2 sqrt l)) = log cosh(u) = log1p(2 sinh^2(u / 2)), u = log(l) / 2."""
    u = np.log(scipy.linalg.eigvalsh(b, a)) / 2
    return math.sqrt(np.sum(np.log1p(2 * np.sinh(u / 2) ** 2)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stein_of_nearby_matrices_keeps_its_digits(dtype):
    """logdet((A+B)/2) - (logdet A + logdet B)/2 cancels O(1) terms down to O(|A - B|^2):
    float32 gave 0 for diag(1, 2, 3) against itself times 1 + 1e-4, and float64 lost half its
    digits at a relative difference of 1e-6 (oracle round 6)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20, 6, 12, generator=g, dtype=torch.float64)
    a = x @ x.mT / 12 + 0.1 * torch.eye(6, dtype=torch.float64)
    noise = torch.randn(20, 6, 6, generator=g, dtype=torch.float64)
    step = 1e-4 if dtype == torch.float32 else 1e-7
    b = a + step * (noise + noise.mT) * a.norm(dim=(-2, -1), keepdim=True) / 6
    a, b = a.to(dtype), b.to(dtype)
    got = spd_distance(a, b, "stein")
    want = torch.tensor([_stein_reference(p.double().numpy(), q.double().numpy())
                         for p, q in zip(a, b)], dtype=torch.float64)
    rtol = 1e-2 if dtype == torch.float32 else 1e-6
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=0)
    diagonal = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=dtype))
    assert spd_distance(diagonal, diagonal * (1 + 1e-4), "stein").item() > 0
    # still exactly 0 with a zero gradient at a == b, and NaN for infinite entries
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=dtype)
    x = a.clone().requires_grad_()
    d = spd_distance(x, a.clone(), "stein")
    (grad,) = torch.autograd.grad(d, x, create_graph=True)
    assert d.item() == 0 and torch.count_nonzero(grad) == 0
    assert torch.isfinite(torch.autograd.grad(grad.sum() + d, x)[0]).all()  # gradient penalty
    big = torch.diag(torch.tensor([math.inf, 1.0], dtype=dtype))
    assert math.isnan(spd_distance(big, big.clone(), "stein", check=False).item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_errors_about_half_inputs_name_their_dtype(dtype):
    """Half inputs are computed in float32; the NaN/Inf check ran on that copy and its error
    said "dtype torch.float32" for the caller's float16 tensor (oracle round 6)."""
    bad = torch.tensor([[1.0, math.inf], [math.inf, 1.0]], dtype=dtype)
    eye = torch.eye(2, dtype=dtype)
    points = torch.ones(3, 2, dtype=dtype)
    calls = [
        lambda: spd_distance(bad, eye, "stein"),
        lambda: spd_distance(eye, bad, "fro"),
        lambda: cholesky_factor(bad),
        lambda: pairwise_mahalanobis(bad, points, cov=eye),
        lambda: pairwise_mahalanobis(points, points, cov=bad),
        lambda: pairwise_mahalanobis(points, points, chol=bad),
        lambda: pairwise_mahalanobis(points, points, chol=torch.eye(3, dtype=dtype)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"dtype {dtype}") as error:
            call()
        assert "float32" not in str(error.value)

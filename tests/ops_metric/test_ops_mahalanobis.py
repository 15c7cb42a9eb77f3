from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchdoctor.ops import (
    cholesky_factor,
    mahalanobis_to_candidates,
    pairwise_mahalanobis,
    whiten,
)
from torchdoctor.ops.reference.mahalanobis import (
    pairwise_mahalanobis_batched_solve,
    pairwise_mahalanobis_loop,
)
from torchdoctor.testing import count_host_syncs


def random_spd(batch, d, gen, dtype=torch.float64):
    a = torch.randn(*batch, d, d, generator=gen, dtype=dtype)
    return a @ a.mT / d + 0.5 * torch.eye(d, dtype=dtype)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    batch=st.sampled_from([(), (1,), (3,), (2, 2)]),
    n=st.integers(1, 4),
    m=st.integers(1, 5),
    d=st.integers(1, 6),
    duplicate=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pairwise_matches_per_pair_solve_loop(batch, n, m, d, duplicate, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(*batch, m, d, generator=gen, dtype=torch.float64)
    if duplicate:  # ties and zero distances
        y[..., 0, :] = x[..., 0, :]
    cov = random_spd(batch, d, gen)
    expected = pairwise_mahalanobis_loop(x, y, cov)
    got = pairwise_mahalanobis(x, y, cov=cov)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    chol, _ = cholesky_factor(cov)
    torch.testing.assert_close(pairwise_mahalanobis(x, y, chol=chol), got)
    torch.testing.assert_close(pairwise_mahalanobis_batched_solve(x, y, cov), expected)
    per_anchor = mahalanobis_to_candidates(
        x, y.unsqueeze(-3).expand(*batch, n, m, d), chol[..., None, :, :]
    )
    torch.testing.assert_close(per_anchor, expected, rtol=1e-9, atol=1e-9)


def test_shared_points_broadcast_against_per_image_covariances():
    gen = torch.Generator().manual_seed(0)
    cov = random_spd((3,), 4, gen)
    x = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    pool = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    got = pairwise_mahalanobis(x, pool, cov=cov)
    assert got.shape == (3, 2, 5)
    for b in range(3):
        torch.testing.assert_close(got[b], pairwise_mahalanobis_loop(x, pool, cov[b]))


def test_whiten_makes_mahalanobis_euclidean_and_preserves_dtype():
    gen = torch.Generator().manual_seed(1)
    cov = random_spd((2,), 3, gen, dtype=torch.float32)
    chol, added = cholesky_factor(cov)
    assert chol.dtype == torch.float32 and added.tolist() == [0.0, 0.0]
    x = torch.randn(2, 6, 3, generator=gen)
    w = whiten(x, chol)
    torch.testing.assert_close(chol @ w.mT, x.mT, rtol=1e-5, atol=1e-5)


def test_cholesky_factor_jitters_only_the_matrices_that_need_it():
    gen = torch.Generator().manual_seed(2)
    good = random_spd((2,), 4, gen)
    v = torch.randn(4, 1, generator=gen, dtype=torch.float64)
    singular = v @ v.mT  # rank 1
    cov = torch.stack([good[0], singular, good[1]])
    chol, added = cholesky_factor(cov)
    assert added[0] == 0 and added[2] == 0 and added[1] > 0
    torch.testing.assert_close(chol[0], torch.linalg.cholesky(good[0]))
    torch.testing.assert_close(chol[2], torch.linalg.cholesky(good[1]))
    expected = singular + added[1] * torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(chol[1] @ chol[1].mT, expected)
    # The hot path gives the same answer without any host sync.
    with count_host_syncs() as syncs:
        chol_hot, added_hot = cholesky_factor(cov, check=False)
    assert syncs.count == 0
    torch.testing.assert_close(chol_hot, chol)
    torch.testing.assert_close(added_hot, added)


def test_not_spd_error_names_batch_index_and_smallest_eigenvalue():
    cov = torch.eye(3, dtype=torch.float64).repeat(2, 2, 1, 1)
    cov[1, 0] = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"batch index \(1, 0\): smallest eigenvalue -2\.000e\+00"):
        cholesky_factor(cov)
    chol, added = cholesky_factor(cov, check=False)
    assert torch.isnan(added[1, 0]) and torch.isnan(chol[1, 0]).all()
    assert torch.isfinite(chol[0]).all() and (added[0] == 0).all()


def test_not_spd_error_reports_the_jitter_tried_and_a_zero_covariance_fails_in_any_dtype():
    cov = torch.diag(torch.tensor([1.0, 1.0, -0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"jitter up to 8\.333e-04"):  # 1e-5 * 10^2 * 5/6
        cholesky_factor(cov, max_tries=3)
    for dtype in (torch.float32, torch.float64):
        zero = torch.zeros(2, 3, 3, dtype=dtype)
        zero[0] = torch.eye(3)
        with pytest.raises(ValueError, match=r"batch index \(1,\).*its diagonal is zero"):
            cholesky_factor(zero)
        chol, added = cholesky_factor(zero, check=False)
        assert torch.isnan(chol[1]).all() and torch.isnan(added[1]) and added[0] == 0


@pytest.mark.parametrize("check", [True, False])
def test_jittered_covariances_have_finite_exact_gradients(check):
    """Seed 000's case: the covariance of K = 4 part features in d = 8 has rank 3, so it needs
    jitter; the gradient is the one of the jittered covariance (the amount held fixed)."""
    gen = torch.Generator().manual_seed(7)
    feats = torch.randn(5, 4, 8, generator=gen, dtype=torch.float64)
    centered = feats - feats.mean(-2, keepdim=True)
    cov = (centered.mT @ centered / 3).requires_grad_()
    x = torch.randn(5, 2, 8, generator=gen, dtype=torch.float64)
    y = torch.randn(5, 3, 8, generator=gen, dtype=torch.float64)
    pairwise_mahalanobis(x, y, cov=cov, check=check).sum().backward()
    assert torch.isfinite(cov.grad).all()
    _, added = cholesky_factor(cov.detach())
    assert (added > 0).all()
    fixed = (
        cov.detach() + added[:, None, None] * torch.eye(8, dtype=torch.float64)
    ).requires_grad_()
    pairwise_mahalanobis_loop(x, y, fixed).sum().backward()
    torch.testing.assert_close(cov.grad, fixed.grad, rtol=1e-6, atol=1e-6)


def test_the_jitter_stop_gradient_is_documented_and_the_amount_has_no_gradient():
    for op in (cholesky_factor, pairwise_mahalanobis):
        assert "jitter amount" in op.__doc__ and "not differentiated" in op.__doc__, op.__name__
    cov = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)  # rank 1: jittered
    chol, added = cholesky_factor(cov)
    assert added.item() > 0 and not added.requires_grad and chol.requires_grad


def test_nan_distances_stay_nan():
    chol = torch.eye(2)
    candidates = torch.tensor([[1.0, 0.0], [float("nan"), 0.0], [3.0, 0.0]])
    got = mahalanobis_to_candidates(torch.zeros(2), candidates, chol, check=False)
    assert got[0] == 1 and torch.isnan(got[1]) and got[2] == 3
    pairwise = pairwise_mahalanobis(torch.zeros(1, 2), candidates, chol=chol, check=False)
    torch.testing.assert_close(pairwise[0], got, equal_nan=True)


def test_checked_path_costs_one_sync_and_hot_path_none():
    gen = torch.Generator().manual_seed(3)
    cov = random_spd((8,), 16, gen, dtype=torch.float32)
    x = torch.randn(8, 4, 16, generator=gen)
    y = torch.randn(8, 60, 16, generator=gen)
    with count_host_syncs() as syncs:
        pairwise_mahalanobis(x, y, cov=cov)
    assert syncs.count == 1
    with count_host_syncs() as syncs:
        chol, _ = cholesky_factor(cov, check=False)
        pairwise_mahalanobis(x, y, chol=chol, check=False)
        mahalanobis_to_candidates(x, y[:, None, :5], chol[:, None], check=False)
        whiten(y, chol)
    assert syncs.count == 0


def test_gradcheck_float64_including_coincident_points():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    y[:, 1] = x[:, 0]
    cov = random_spd((2,), 3, gen)

    def f(x, y, cov):
        return pairwise_mahalanobis(x, y, cov=(cov + cov.mT) / 2)

    inputs = tuple(t.clone().requires_grad_() for t in (x, y, cov))
    out = f(*inputs)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs)
    # gradcheck away from the non-differentiable coincident points
    y2 = y.clone()
    y2[:, 1] += 0.3
    assert torch.autograd.gradcheck(f, tuple(t.clone().requires_grad_() for t in (x, y2, cov)))
    chol = torch.linalg.cholesky(cov)
    assert torch.autograd.gradcheck(
        lambda a, c: mahalanobis_to_candidates(a, c, chol[:, None]),
        (x.clone().requires_grad_(), y2[:, None].expand(2, 3, 4, 3).clone().requires_grad_()),
    )


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: pairwise_mahalanobis(torch.zeros(2, 3), torch.zeros(2, 4), cov=torch.eye(3)),
            ValueError,
            "y must have size 3",
        ),
        (
            lambda: pairwise_mahalanobis(torch.zeros(2, 3), torch.zeros(2, 3)),
            ValueError,
            "exactly one of cov",
        ),
        (
            lambda: pairwise_mahalanobis(torch.zeros(3), torch.zeros(2, 3), cov=torch.eye(3)),
            ValueError,
            "at least 2 dimensions",
        ),
        (
            lambda: pairwise_mahalanobis(
                torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64), cov=torch.eye(3)
            ),
            TypeError,
            "has dtype torch.float64",
        ),
        (
            lambda: pairwise_mahalanobis(
                torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), cov=torch.eye(3)
            ),
            TypeError,
            "floating-point",
        ),
        (
            lambda: pairwise_mahalanobis(
                torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2), cov=torch.eye(2)
            ),
            ValueError,
            "x contains non-finite",
        ),
        (lambda: cholesky_factor(torch.zeros(2, 3)), ValueError, "square matrices"),
        (
            lambda: pairwise_mahalanobis(torch.zeros(2, 3), torch.zeros(2, 3), cov=torch.eye(4)),
            ValueError,
            "cov must have size 3",
        ),
        (
            lambda: whiten(torch.zeros(4, 2, 3), torch.eye(3).expand(3, 3, 3)),
            ValueError,
            "do not broadcast",
        ),
    ],
)
def test_errors_are_clear(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_preserved_and_close_to_float32(dtype):
    gen = torch.Generator().manual_seed(5)
    cov = random_spd((2,), 4, gen, dtype=torch.float32)
    x = torch.randn(2, 3, 4, generator=gen)
    y = torch.randn(2, 5, 4, generator=gen)
    expected = pairwise_mahalanobis(
        x.to(dtype).float(), y.to(dtype).float(), cov=cov.to(dtype).float()
    )
    got = pairwise_mahalanobis(x.to(dtype), y.to(dtype), cov=cov.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected, rtol=1e-2, atol=1e-2)
    chol, added = cholesky_factor(cov.to(dtype))
    # the jitter in the dtype it was computed in: a float16 1e-8 would read 0
    assert chol.dtype == dtype and added.dtype == torch.float32
    anchor = x[:, 0].to(dtype)
    per_anchor = mahalanobis_to_candidates(anchor, y.to(dtype), chol.float().to(dtype))
    assert per_anchor.dtype == dtype


def test_batch_mismatch_names_the_argument_given_before_any_factorization():
    x, y = torch.randn(3, 5, 2), torch.randn(3, 4, 2)
    with pytest.raises(ValueError, match=r"x and y \(3,\) and cov \(4,\) do not broadcast") as info:
        pairwise_mahalanobis(x, y, cov=torch.eye(2).repeat(4, 1, 1))
    assert "chol" not in str(info.value)  # the caller passed cov
    with pytest.raises(ValueError, match=r"and cov \(4,\) do not broadcast"):  # not "not SPD"
        pairwise_mahalanobis(x, y, cov=-torch.eye(2).repeat(4, 1, 1))
    with pytest.raises(ValueError, match=r"x and y \(3,\) and chol \(4,\) do not broadcast"):
        pairwise_mahalanobis(x, y, chol=torch.eye(2).repeat(4, 1, 1))
    assert pairwise_mahalanobis(x, y[:1], cov=torch.eye(2).repeat(3, 1, 1)).shape == (3, 5, 4)


def test_jitter_is_scaled_by_the_mean_absolute_diagonal():
    """The documented step: jitter * mean(|diag|) * 10**k, positive even for a negative entry."""
    cov = torch.diag(torch.tensor([-0.5, 3.0], dtype=torch.float64))
    _, added = cholesky_factor(cov, jitter=1.0, max_tries=1, check=False)
    assert added.item() == 1.0 * (0.5 + 3.0) / 2  # mean(diag) would add 1.25
    _, added = cholesky_factor(cov, jitter=0.1, max_tries=2, check=False)
    assert math.isclose(added.item(), 0.1 * 10 * 1.75)  # k = 0 (0.175) fails, k = 1 factors


def test_second_derivatives_follow_cdist_with_a_working_alternative_on_any_torch():
    """Double backward through pairwise_mahalanobis goes through torch.cdist's backward: no
    derivative before torch 2.14 (the docstring says so and names mahalanobis_to_candidates,
    which gives the same distances twice differentiably), correct from 2.14."""
    doc = pairwise_mahalanobis.__doc__
    assert "Second derivatives" in doc and "supported from torch 2.14" in doc
    assert "mahalanobis_to_candidates(x, y.unsqueeze(-3), chol.unsqueeze(-3))" in doc
    generator = torch.Generator().manual_seed(12)
    x = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    cov = torch.randn(2, 4, 4, generator=generator, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov @ cov.mT + torch.eye(4, dtype=torch.float64))
    (grad,) = torch.autograd.grad(pairwise_mahalanobis(x, y, chol=chol).sum(), x, create_graph=True)
    if tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 14):
        assert torch.autograd.gradgradcheck(lambda x: pairwise_mahalanobis(x, y, chol=chol), (x,))
    else:
        with pytest.raises(NotImplementedError, match="_cdist_backward"):
            grad.sum().backward()  # as documented
    alternative = mahalanobis_to_candidates(x, y.unsqueeze(-3), chol.unsqueeze(-3))
    torch.testing.assert_close(alternative, pairwise_mahalanobis(x, y, chol=chol))
    assert torch.autograd.gradgradcheck(
        lambda x: mahalanobis_to_candidates(x, y.unsqueeze(-3), chol.unsqueeze(-3)), (x,)
    )


def test_half_precision_jitter_is_reported_where_float16_would_round_it_to_zero():
    """A rank-1 matrix of scale 1e-3 needs about 1e-8 of jitter: 0 in float16, so the amount
    comes back in float32, the dtype it was factored in."""
    cov = torch.full((3, 3), 1e-3, dtype=torch.float16)
    chol, added = cholesky_factor(cov)
    assert chol.dtype == torch.float16 and torch.isfinite(chol).all()
    assert added.item() > 0
    torch.testing.assert_close(added, cholesky_factor(cov.float())[1])

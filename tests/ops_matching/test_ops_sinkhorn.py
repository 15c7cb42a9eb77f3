"""sinkhorn: equal to POT's log-domain Sinkhorn, batched, sync-free unless tol is given."""

from __future__ import annotations

import math

import pytest
import torch

from torchdoctor.ops.assignment import linear_assignment
from torchdoctor.ops.reference.sinkhorn import sinkhorn_reference
from torchdoctor.ops.sinkhorn import plan_to_assignment, sinkhorn
from torchdoctor.testing import count_host_syncs

pytest.importorskip("ot")


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 5), (8, 8), (16, 16), (7, 2)])
@pytest.mark.parametrize("eps", [0.5, 0.05])
def test_matches_pot_in_float64(rows, cols, eps):
    generator = torch.Generator().manual_seed(rows * 100 + cols)
    cost = torch.rand(6, rows, cols, generator=generator, dtype=torch.float64)
    a = torch.rand(6, rows, generator=generator, dtype=torch.float64) + 0.1
    b = torch.rand(6, cols, generator=generator, dtype=torch.float64) + 0.1
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    got = sinkhorn(cost, a, b, eps=eps, iters=150)
    plan, f, g = sinkhorn_reference(cost, a, b, eps=eps, iters=150)
    torch.testing.assert_close(got.plan, plan, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.f, f, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.g, g, atol=1e-6, rtol=1e-6)


def test_uniform_default_weights_leading_dims_and_forbidden_pairs():
    generator = torch.Generator().manual_seed(0)
    cost = torch.rand(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    cost[0, 1, 2, 3] = math.inf
    got = sinkhorn(cost, eps=0.1, iters=300)
    plan, _, _ = sinkhorn_reference(cost, eps=0.1, iters=300)
    torch.testing.assert_close(got.plan, plan, atol=1e-6, rtol=0)
    assert got.plan[0, 1, 2, 3] == 0
    torch.testing.assert_close(got.plan.sum(-1), torch.full((2, 3, 4), 0.25, dtype=torch.float64))


def test_plan_is_reproduced_by_the_potentials():
    cost = torch.rand(4, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps = 0.2
    result = sinkhorn(cost, eps=eps, iters=20)
    rebuilt = torch.exp((result.f.unsqueeze(-1) + result.g.unsqueeze(-2) - cost) / eps)
    torch.testing.assert_close(rebuilt, result.plan)


def test_no_sync_without_tol_and_one_per_check_with_tol():
    cost = torch.rand(8, 6, 6, generator=torch.Generator().manual_seed(2))
    with count_host_syncs() as syncs:
        sinkhorn(cost, eps=0.1, iters=40, check=False)
    assert syncs.count == 0, syncs.ops
    with count_host_syncs() as syncs:
        sinkhorn(cost, eps=0.1, iters=40, tol=0.0, check_every=10, check=False)
    assert syncs.count == 4  # after iterations 1, 11, 21, 31


def test_tol_stops_early_with_small_marginal_error():
    cost = torch.rand(8, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    result = sinkhorn(cost, eps=0.5, iters=1_000, tol=1e-8)
    error = (result.plan.sum(-2) - 1 / 6).norm(dim=-1)
    assert error.max() < 1e-8
    full = sinkhorn(cost, eps=0.5, iters=1_000)  # runs to the end: still the same plan
    torch.testing.assert_close(result.plan, full.plan, atol=1e-7, rtol=0)


def test_gradients_flow_through_the_iterations():
    cost = torch.rand(3, 4, 4, dtype=torch.float64, requires_grad=True)
    result = sinkhorn(cost, eps=0.3, iters=30)
    (result.plan * cost).sum().backward()
    assert cost.grad is not None and torch.isfinite(cost.grad).all()


def test_zero_marginal_weights_give_finite_gradients_and_the_same_plan():
    cost = torch.rand(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.5, 0.0, 0.25, 0.25], dtype=torch.float64, requires_grad=True)
    result = sinkhorn(cost, a, b, eps=0.1, iters=50)
    (result.plan * cost).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert a.grad[1] == 0 and b.grad[1] == 0
    assert (result.plan[1] == 0).all() and (result.plan[:, 1] == 0).all()

    def loss(w):
        return (sinkhorn(cost, w, b.detach(), eps=0.1, iters=50).plan * cost).sum()

    h = 1e-6  # the positive weights' gradients are exact (central differences)
    for i in (0, 2):
        step = torch.zeros(3, dtype=torch.float64)
        step[i] = h
        numeric = (loss(a.detach() + step) - loss(a.detach() - step)) / (2 * h)
        assert abs(a.grad[i].item() - numeric.item()) < 1e-6


def test_bad_input_errors_name_the_problem():
    cost = torch.rand(3, 4, 4)
    cost[2, 0, 0] = math.nan
    with pytest.raises(ValueError, match="problem 2 has NaN"):
        sinkhorn(cost)
    cost = torch.rand(3, 4, 4)
    cost[1, :, 2] = math.inf
    with pytest.raises(ValueError, match="problem 1 has a row or column"):
        sinkhorn(cost)
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        sinkhorn(torch.rand(2, 2), eps=0.0)
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        sinkhorn(torch.rand(2, 2), eps=math.inf)
    with pytest.raises(ValueError, match="iters must be an int >= 0, got 10.0"):
        sinkhorn(torch.rand(2, 2), iters=10.0)
    with pytest.raises(ValueError, match=r"a must have shape \(\.\.\., 2\)"):
        sinkhorn(torch.rand(2, 2), a=torch.ones(3) / 3)
    with pytest.raises(TypeError, match="floating-point"):
        sinkhorn(torch.ones(2, 2, dtype=torch.long))


def test_marginals_are_checked_per_problem():
    cost = torch.rand(2, 3, 4, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"a must have shape \(\.\.\., 3\) broadcastable to \(2, 3\)"
    ):
        sinkhorn(cost, a=torch.ones(5, 3) / 3)
    b = torch.full((2, 4), 0.25, dtype=torch.float64)
    b[1, 0] = -0.25
    with pytest.raises(ValueError, match="problem 1 has column weights b that are negative"):
        sinkhorn(cost, b=b)
    with pytest.raises(ValueError, match="problem 0 has row weights a .* all zero"):
        sinkhorn(cost, a=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"a.sum\(\) = 1.5 != b.sum\(\) = 1"):
        sinkhorn(cost, a=torch.full((3,), 0.5, dtype=torch.float64))
    a = torch.tensor([0.2, 0.0, 0.8], dtype=torch.float64)  # a zero weight is allowed
    plan = sinkhorn(cost, a=a, iters=200).plan
    torch.testing.assert_close(plan.sum(-1), a.expand(2, 3))
    assert sinkhorn(cost, a=-a, check=False).plan.isnan().all()  # check=False: as POT does


def test_empty_problems_give_empty_plans():
    for shape in [(0, 4), (3, 0), (2, 0, 4), (2, 3, 0), (0, 3, 4)]:
        for tol in (None, 1e-3):
            result = sinkhorn(torch.rand(shape), tol=tol)
            assert result.plan.shape == shape
            assert result.f.shape == (*shape[:-2], shape[-2])
            assert result.g.shape == (*shape[:-2], shape[-1])
            assert (result.f == 0).all() and (result.g == 0).all()


def test_tol_ends_each_problem_where_a_run_on_it_alone_would():
    """A problem that meets tol is frozen: batch-mates do not change its plan, and each one
    equals POT with the same stopThr (checks at the same iterations)."""
    ot = pytest.importorskip("ot")
    generator = torch.Generator().manual_seed(5)
    cost = torch.rand(5, 6, 6, dtype=torch.float64, generator=generator)
    cost[2] *= 20  # a harder problem: needs many more iterations
    batched = sinkhorn(cost, eps=0.05, iters=2_000, tol=1e-4)
    for index in range(5):
        alone = sinkhorn(cost[index], eps=0.05, iters=2_000, tol=1e-4)
        torch.testing.assert_close(batched.plan[index], alone.plan, atol=1e-12, rtol=0)
        uniform = torch.full((6,), 1 / 6, dtype=torch.float64)
        pot = ot.sinkhorn(uniform, uniform, cost[index], 0.05, method="sinkhorn_log",
                          numItermax=2_000, stopThr=1e-4)  # fmt: skip
        torch.testing.assert_close(batched.plan[index], pot, atol=1e-9, rtol=0)


def test_plan_to_assignment_recovers_a_clear_optimum():
    generator = torch.Generator().manual_seed(4)
    perm = torch.stack([torch.randperm(6, generator=generator) for _ in range(10)])
    cost = torch.rand(10, 6, 6, generator=generator, dtype=torch.float64) + 1.0
    cost.scatter_(2, perm.unsqueeze(-1), 0.0)  # a unique zero-cost permutation per problem
    plan = sinkhorn(cost, eps=0.05, iters=200).plan
    for method in ("greedy", "exact"):
        assert torch.equal(plan_to_assignment(plan, method=method).columns, perm)
    assert torch.equal(linear_assignment(cost).columns, perm)
    with pytest.raises(ValueError, match="'greedy' or 'exact'"):
        plan_to_assignment(plan, method="argmax")
    with pytest.raises(ValueError, match=r"plan_to_assignment: plan must have shape"):
        plan_to_assignment(torch.ones(3))
    with pytest.raises(ValueError, match=r"plan_to_assignment\(method='exact'\): .* NaN plan"):
        plan_to_assignment(torch.tensor([[math.nan, 1.0], [0.0, 1.0]]), method="exact")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    """-cost/eps once overflowed float16 (plan mass 4.1 instead of 1) and bfloat16 sums broke
    the marginals (mass 5.0)."""
    generator = torch.Generator().manual_seed(0)
    cost = (torch.rand(4, 4, generator=generator) * 1000).to(dtype)
    a = torch.tensor([0.125, 0.25, 0.25, 0.375])  # exact in half precision too
    for weights in (None, a, a.to(dtype)):
        got = sinkhorn(cost, weights, eps=0.01, tol=1e-4)
        wide = sinkhorn(cost.float(), weights, eps=0.01, tol=1e-4)
        assert got.plan.dtype == got.f.dtype == got.g.dtype == dtype
        for half, full in zip(got, wide):
            assert torch.equal(half, full.to(dtype))
        assert torch.isfinite(got.plan).all()
        assert math.isclose(got.plan.float().sum().item(), 1.0, rel_tol=1e-2)
    leaf = cost.clone().requires_grad_()
    sinkhorn(leaf, eps=1.0, iters=5).plan.sum().backward()
    assert leaf.grad.dtype == dtype and torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weights_rounded_to_half_precision_pass_the_equal_totals_check(dtype):
    """1/3 in float16 sums to 0.99976 over three weights, against 1.0 for two halves: equal
    up to the dtype's rounding, which the check now allows (it asked for 1e-5)."""
    a, b = torch.full((2,), 1 / 2, dtype=dtype), torch.full((3,), 1 / 3, dtype=dtype)
    plan = sinkhorn(torch.rand(2, 3).to(dtype), a, b, eps=0.1).plan
    assert torch.isfinite(plan).all() and plan.dtype == dtype
    with pytest.raises(ValueError, match="balanced transport"):  # (a real mismatch still fails)
        sinkhorn(torch.rand(2, 3).to(dtype), a, b * 1.1, eps=0.1)


def test_infinite_weights_and_costs_that_overflow_over_eps_are_rejected():
    """a = [inf, 0.5] passed the equal-totals test (inf > inf is False) and a float32 row of
    finfo.max (-cost / eps overflows to -inf) passed too: both gave an all-NaN plan."""
    cost = torch.rand(2, 2)
    with pytest.raises(ValueError, match="row weights a that are negative, NaN, infinite"):
        sinkhorn(cost, torch.tensor([math.inf, 0.5]), torch.tensor([0.5, 0.5]))
    huge = cost.clone()
    huge[0] = torch.finfo(torch.float32).max
    with pytest.raises(ValueError, match=r"too large for eps=0\.1: cost / eps overflows"):
        sinkhorn(huge, eps=0.1)
    assert torch.isfinite(sinkhorn(huge.double(), eps=0.1).plan).all()  # (float64 holds it)

import torch

from torchdoctor.workloads import build
from torchdoctor.workloads import part_contrastive_losses as L


def test_part_sampling_slow_and_fast_pick_the_same_positions():
    torch.manual_seed(0)
    fmap = torch.randn(3, 5, 4, 4)
    parts, positions = L.sample_parts_slow(fmap, 4)
    fast = L.sample_positions_fast(fmap, 4)
    assert torch.equal(positions, fast)
    assert torch.equal(parts, L.gather_parts(fmap, fast))


def test_matching_slow_and_fast_agree_and_are_permutations():
    torch.manual_seed(1)
    a, b = torch.randn(6, 4, 8), torch.randn(6, 4, 8)
    slow = L.match_slow(a, b)
    assert torch.equal(slow, L.match_fast(a, b, "exact"))
    greedy = L.match_fast(a, b, "greedy")
    assert torch.equal(greedy.sort(1).values, torch.arange(4).expand(6, 4))


def test_pac_fast_with_full_pool_equals_per_pair_solve_loop():
    torch.manual_seed(2)
    p1, p2 = torch.randn(3, 4, 6, dtype=torch.float64), torch.randn(3, 4, 6, dtype=torch.float64)
    cov = L.covariance_fast(torch.cat([p1, p2], 1), 0.1)
    torch.testing.assert_close(cov, L.covariance_slow(torch.cat([p1, p2], 1), 0.1))
    slow = L.pac_slow(p1, p2, cov, margin=0.5)
    assert slow > 0  # the check is not vacuous: some triplets are active
    torch.testing.assert_close(L.pac_fast(p1, p2, cov, 0.5, top_m=24), slow, rtol=1e-10, atol=0)


def test_log_euclidean_soc_has_finite_gradients_with_repeated_eigenvalues():
    torch.manual_seed(3)
    p1 = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    p2 = torch.randn(2, 4, 8, dtype=torch.float64)
    soc = L.soc_fast(p1, p2, 0.1, "log_euclidean")  # rank-3 covariances + ridge: 5 equal eigvals
    soc.backward()
    assert torch.isfinite(p1.grad).all()
    torch.testing.assert_close(soc, L.soc_slow(p1, p2, 0.1, "log_euclidean"))


def test_logm_backward_matches_finite_differences():
    torch.manual_seed(4)
    x = torch.randn(5, 5, dtype=torch.float64)
    a = (x @ x.T + 5 * torch.eye(5, dtype=torch.float64)).requires_grad_(True)
    b = torch.eye(5, dtype=torch.float64) * 2
    assert torch.autograd.gradcheck(
        lambda m: L.spd_distance_local(0.5 * (m + m.T), b, "log_euclidean"), (a,)
    )


def test_part_contrastive_steps_and_equivalence():
    w = build("part_contrastive", scale="tiny")
    first_slow, first_fast = w.slow_step(), w.fast_step()
    assert torch.isfinite(first_slow) and torch.isfinite(first_fast)
    w.fast_step()  # a step served from the cached matching (refresh_every = 2)
    report = w.check_equivalence()
    assert report.equivalent, report.summary()
    assert report.checks[0].passed
    assert any(c.passed is None and "top_m" in c.name for c in report.checks)


def test_shared_covariance_ema_option_trains_with_finite_losses():
    w = build("part_contrastive", scale="tiny", covariance_ema=0.9)
    losses_seen = [w.fast_step() for _ in range(3)]
    assert all(torch.isfinite(v) for v in losses_seen)
    ema = w.fast["covariance_ema"]
    assert ema is not None and ema.value().shape == (w.config.dim, w.config.dim)

"""Every op on CUDA gives what it gives on the CPU (and what its naive reference gives).

Inputs are built on the CPU from a seeded generator, copied to the device, and the device
result is compared with the CPU result of the same call. Float64 keeps the comparisons tight;
integer outputs (indices, assignments, selections) must be identical.
"""

from __future__ import annotations

import pytest
import torch

from torchdoctor import ops
from torchdoctor.ops.reference.assignment import linear_assignment_reference
from torchdoctor.ops.reference.dpp import dpp_greedy_reference
from torchdoctor.ops.reference.tokens import select_tokens_reference

pytestmark = pytest.mark.cuda

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(batch: int, d: int, seed: int = 0) -> torch.Tensor:
    a = torch.randn(batch, d, 2 * d, dtype=F64, generator=_gen(seed))
    return a @ a.transpose(-1, -2) / (2 * d) + 0.1 * torch.eye(d, dtype=F64)


def _same(cpu_out, dev_out, *, atol: float = 1e-8, rtol: float = 1e-6) -> None:
    cpu_items = cpu_out if isinstance(cpu_out, tuple) else (cpu_out,)
    dev_items = dev_out if isinstance(dev_out, tuple) else (dev_out,)
    assert len(cpu_items) == len(dev_items)
    for a, b in zip(cpu_items, dev_items):
        if not isinstance(a, torch.Tensor):
            assert a == b
            continue
        b_host = b.cpu()
        assert a.shape == b_host.shape and a.dtype == b_host.dtype
        if a.is_floating_point():
            torch.testing.assert_close(b_host, a, atol=atol, rtol=rtol, equal_nan=True)
        else:
            assert torch.equal(b_host, a)


def _on(device, *tensors):
    return tuple(t.to(device) for t in tensors)


def test_cholesky_whiten_and_mahalanobis_match_cpu(device):
    cov = _spd(3, 5)
    x = torch.randn(3, 4, 5, dtype=F64, generator=_gen(1))
    y = torch.randn(3, 6, 5, dtype=F64, generator=_gen(2))
    chol, added = ops.cholesky_factor(cov)
    d_chol, d_added = ops.cholesky_factor(cov.to(device))
    _same((chol, added), (d_chol, d_added))
    _same(ops.whiten(y, chol), ops.whiten(*_on(device, y, chol)))
    _same(
        ops.pairwise_mahalanobis(x, y, cov=cov),
        ops.pairwise_mahalanobis(*_on(device, x, y), cov=cov.to(device)),
    )
    candidates = torch.randn(3, 4, 7, 5, dtype=F64, generator=_gen(3))
    _same(
        ops.mahalanobis_to_candidates(x, candidates, chol[:, None]),
        ops.mahalanobis_to_candidates(*_on(device, x, candidates, chol[:, None])),
    )


def test_mahalanobis_gradient_matches_cpu(device):
    cov = _spd(2, 4)
    x = torch.randn(2, 3, 4, dtype=F64, generator=_gen(4), requires_grad=True)
    y = torch.randn(2, 5, 4, dtype=F64, generator=_gen(5))
    ops.pairwise_mahalanobis(x, y, cov=cov).sum().backward()
    x_dev = x.detach().to(device).requires_grad_(True)
    ops.pairwise_mahalanobis(x_dev, y.to(device), cov=cov.to(device)).sum().backward()
    _same(x.grad, x_dev.grad)


@pytest.mark.parametrize("miner", ["two_stage_negatives", "exhaustive_negatives"])
def test_negative_mining_matches_cpu(device, miner):
    g = _gen(6)
    anchors = torch.randn(2, 8, 5, dtype=F64, generator=g)
    positives = anchors + 0.1 * torch.randn(2, 8, 5, dtype=F64, generator=g)
    pool = torch.randn(2, 16, 5, dtype=F64, generator=g)
    anchor_labels = torch.randint(0, 4, (2, 8), generator=g)
    pool_labels = torch.randint(0, 4, (2, 16), generator=g)
    chol, _ = ops.cholesky_factor(_spd(2, 5, seed=7))
    kwargs = {"top_m": 6} if miner == "two_stage_negatives" else {}
    fn = getattr(ops, miner)
    args = (anchors, positives, pool, anchor_labels, pool_labels, chol)
    _same(tuple(fn(*args, **kwargs)), tuple(fn(*_on(device, *args), **kwargs)))


def test_covariance_and_ema_match_cpu(device):
    x = torch.randn(4, 10, 3, dtype=F64, generator=_gen(8))
    _same(ops.covariance(x, shrinkage=0.2), ops.covariance(x.to(device), shrinkage=0.2))
    ema_cpu, ema_dev = ops.CovarianceEMA(decay=0.9), ops.CovarianceEMA(decay=0.9).to(device)
    for _ in range(3):
        cov = ops.covariance(x)
        out_cpu, out_dev = ema_cpu(cov), ema_dev(cov.to(device))
    _same(out_cpu, out_dev)


@pytest.mark.parametrize("metric", ops.SPD_METRICS)
def test_spd_distance_matches_cpu(device, metric):
    a, b = _spd(4, 5, seed=9), _spd(4, 5, seed=10)
    _same(ops.spd_distance(a, b, metric), ops.spd_distance(a.to(device), b.to(device), metric),
          atol=1e-7, rtol=1e-6)  # fmt: skip


def test_labels_and_segments_match_cpu(device):
    labels = torch.tensor([7, 3, 7, 11, 3, 3])
    _same(ops.remap_labels(labels), ops.remap_labels(labels.to(device)))
    ids = torch.tensor([[0, 2, 0, 1, 2, 2, -1, 1], [1, 1, 0, 0, 2, -1, 2, 0]])
    values = torch.randn(2, 8, 3, dtype=F64, generator=_gen(11))
    _same(ops.group_by_segment(ids, num_segments=3), ops.group_by_segment(ids.to(device), 3))
    _same(
        ops.pad_segments(values, ids, num_segments=3, max_len=4),
        ops.pad_segments(values.to(device), ids.to(device), num_segments=3, max_len=4),
    )


@pytest.mark.parametrize("shape", [(16, 3, 3), (16, 4, 6), (16, 7, 5), (8, 12, 12)])
def test_linear_assignment_on_device_matches_scipy(device, shape):
    cost = torch.rand(*shape, dtype=F64, generator=_gen(12))
    expected = ops.linear_assignment(cost, method="scipy")  # the host solver
    for method in ("auto", "torch"):
        got = ops.linear_assignment(cost.to(device), method=method)
        torch.testing.assert_close(got.total.cpu(), expected.total, rtol=1e-10, atol=1e-10)
        # each row's column is a valid, injective choice
        cols = got.columns.cpu()
        for problem in cols:
            chosen = problem[problem >= 0]
            assert len(set(chosen.tolist())) == len(chosen) == min(shape[1:])
    ref = linear_assignment_reference(cost[0])
    torch.testing.assert_close(expected.total[0], torch.as_tensor(ref[1], dtype=F64))


def test_greedy_assignment_sinkhorn_and_plan_match_cpu(device):
    cost = torch.rand(6, 5, 5, dtype=F64, generator=_gen(13))
    _same(ops.greedy_assignment(cost), ops.greedy_assignment(cost.to(device)))
    result = ops.sinkhorn(cost, eps=0.05, iters=200)
    result_dev = ops.sinkhorn(cost.to(device), eps=0.05, iters=200)
    _same(tuple(result), tuple(result_dev), atol=1e-9, rtol=1e-7)
    _same(ops.plan_to_assignment(result.plan), ops.plan_to_assignment(result_dev.plan))


def test_dpp_greedy_torch_backend_matches_reference(device):
    features = torch.randn(4, 20, 6, dtype=F64, generator=_gen(14))
    quality = torch.rand(4, 20, dtype=F64, generator=_gen(15)) + 0.5
    selection = ops.dpp_greedy(features=features.to(device), quality=quality.to(device), k=5,
                               backend="torch")  # fmt: skip
    for problem in range(4):
        kernel = quality[problem, :, None] * (features[problem] @ features[problem].T)
        kernel = kernel * quality[problem, None, :]
        indices, log_det = dpp_greedy_reference(kernel, k=5)
        assert selection.indices[problem].cpu().tolist() == indices
        assert selection.log_det[problem].item() == pytest.approx(log_det, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("method", ["dpp", "greedy_cosine", "topk"])
def test_select_tokens_torch_backend_on_device_is_the_reference(device, method):
    g = _gen(16)
    n = 120
    features = torch.randn(n, 16, generator=g)
    segment_ids = torch.randint(-1, 6, (n,), generator=g)
    quality = torch.rand(n, generator=g)
    expected = select_tokens_reference(features, segment_ids, 0.3, quality=quality, method=method)
    got = ops.select_tokens_per_segment(
        *_on(device, features, segment_ids), 0.3, quality=quality.to(device), method=method,
        backend="torch",
    )  # fmt: skip
    assert got.device.type == device.type
    assert got.cpu().tolist() == expected.tolist()

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from ops1_helpers import count_syncs

from torchdoctor.ops import cholesky_factor, exhaustive_negatives, two_stage_negatives
from torchdoctor.ops.reference.mining import mine_negatives_loop


def make_problem(seed, batch=2, n=3, p=7, d=3, labels=3, duplicate=False, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    anchors = torch.randn(batch, n, d, generator=gen, dtype=dtype)
    positives = anchors + 0.7 * torch.randn(batch, n, d, generator=gen, dtype=dtype)
    pool = torch.randn(batch, p, d, generator=gen, dtype=dtype)
    if duplicate and p > 1:  # exact ties in distance and cosine
        pool[:, -1] = pool[:, 0]
    anchor_labels = torch.randint(0, labels, (batch, n), generator=gen)
    pool_labels = torch.randint(0, labels, (batch, p), generator=gen)
    a = torch.randn(batch, d, d, generator=gen, dtype=dtype)
    cov = a @ a.mT / d + 0.5 * torch.eye(d, dtype=dtype)
    return anchors, positives, pool, anchor_labels, pool_labels, cov


problems = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "batch": st.integers(1, 3),
        "n": st.integers(1, 4),
        "p": st.integers(1, 9),
        "d": st.integers(1, 4),
        "labels": st.integers(1, 3),
        "duplicate": st.booleans(),
    }
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(problem=problems, mode=st.sampled_from(["semihard", "hard"]), margin=st.floats(0.0, 3.0))
def test_exhaustive_matches_naive_loop(problem, mode, margin):
    anchors, positives, pool, al, pl, cov = make_problem(**problem)
    chol, _ = cholesky_factor(cov)
    mined = exhaustive_negatives(anchors, positives, pool, al, pl, chol, margin=margin, mode=mode)
    for b in range(problem["batch"]):
        idx, dist = mine_negatives_loop(
            anchors[b], positives[b], pool[b], al[b], pl[b], cov[b], margin, mode
        )
        assert mined.indices[b].tolist() == idx
        assert mined.found[b].tolist() == [i >= 0 for i in idx]
        torch.testing.assert_close(
            mined.distances[b], torch.tensor(dist, dtype=torch.float64), equal_nan=True
        )


@settings(max_examples=40, deadline=None, derandomize=True)
@given(problem=problems, mode=st.sampled_from(["semihard", "hard"]), extra=st.integers(0, 3))
def test_top_m_at_least_pool_equals_exhaustive_exactly(problem, mode, extra):
    anchors, positives, pool, al, pl, cov = make_problem(**problem)
    chol, _ = cholesky_factor(cov)
    exact = exhaustive_negatives(anchors, positives, pool, al, pl, chol, mode=mode)
    two = two_stage_negatives(
        anchors, positives, pool, al, pl, chol, top_m=problem["p"] + extra, mode=mode
    )
    for a, b in zip(exact, two):
        assert torch.equal(a.isnan(), b.isnan()) if a.is_floating_point() else True
        assert torch.equal(a.nan_to_num(-1), b.nan_to_num(-1))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(problem=problems, top_m=st.integers(1, 4), mode=st.sampled_from(["semihard", "hard"]))
def test_two_stage_matches_naive_loop_on_cosine_top_m(problem, top_m, mode):
    anchors, positives, pool, al, pl, cov = make_problem(**problem)
    if top_m >= problem["p"]:
        top_m = max(1, problem["p"] - 1)
    chol, _ = cholesky_factor(cov)
    mined = two_stage_negatives(anchors, positives, pool, al, pl, chol, top_m=top_m, mode=mode)
    for b in range(problem["batch"]):
        candidates = cosine_candidates(anchors[b], pool[b], al[b], pl[b], top_m)
        if candidates is None:  # a cosine tie at the cut: topk may keep either one
            continue
        idx, dist = mine_negatives_loop(
            anchors[b], positives[b], pool[b], al[b], pl[b], cov[b], 1.0, mode, candidates
        )
        assert mined.indices[b].tolist() == idx
        expected = torch.tensor(dist, dtype=torch.float64)
        torch.testing.assert_close(mined.distances[b], expected, equal_nan=True)


def cosine_candidates(anchors, pool, anchor_labels, pool_labels, top_m):
    """Per anchor, the top_m most cosine-similar negatives; None when the cut is a tie."""
    sim = F.normalize(anchors, dim=-1) @ F.normalize(pool, dim=-1).T
    out = []
    for i in range(anchors.shape[0]):
        allowed = [j for j in range(pool.shape[0]) if pool_labels[j] != anchor_labels[i]]
        ranked = sorted(allowed, key=lambda j: -float(sim[i, j]))
        if len(ranked) > top_m and math.isclose(
            float(sim[i, ranked[top_m - 1]]), float(sim[i, ranked[top_m]]), rel_tol=1e-9
        ):
            return None
        out.append(ranked[:top_m])
    return out


def test_shared_pool_broadcasts_and_hot_path_has_no_sync():
    gen = torch.Generator().manual_seed(0)
    B, K, d, P = 4, 4, 8, 200
    anchors = torch.randn(B, K, d, generator=gen)
    positives = anchors + 0.3 * torch.randn(B, K, d, generator=gen)
    pool = torch.randn(P, d, generator=gen)  # one pool shared by all images
    pool_labels = torch.randint(0, 10, (P,), generator=gen)
    anchor_labels = torch.randint(0, 10, (B, K), generator=gen)
    a = torch.randn(B, d, d, generator=gen)
    chol, _ = cholesky_factor(a @ a.mT / d + torch.eye(d))
    with count_syncs() as syncs:
        mined = two_stage_negatives(
            anchors, positives, pool, anchor_labels, pool_labels, chol, top_m=16, check=False
        )
    assert syncs.total == 0
    assert mined.indices.shape == (B, K) and mined.found.all()
    assert (pool_labels[mined.indices] != anchor_labels).all()
    with count_syncs() as syncs:
        two_stage_negatives(anchors, positives, pool, anchor_labels, pool_labels, chol, top_m=16)
    assert syncs.total == 1


def test_distances_are_differentiable():
    anchors, positives, pool, al, pl, cov = make_problem(5, n=4, p=12, d=3, labels=2)
    anchors.requires_grad_()
    pool.requires_grad_()
    chol, _ = cholesky_factor(cov)
    mined = two_stage_negatives(anchors, positives, pool, al, pl, chol, top_m=4)
    loss = (mined.positive_distances - mined.distances).nan_to_num().sum()
    loss.backward()
    assert torch.isfinite(anchors.grad).all() and pool.grad.abs().sum() > 0


def test_anchor_without_negatives_reports_not_found():
    anchors, positives, pool, _, _, cov = make_problem(6, batch=1, n=2, p=3, d=2)
    al = torch.tensor([[0, 1]])
    pl = torch.tensor([[0, 0, 0]])
    mined = two_stage_negatives(
        anchors, positives, pool, al, pl, torch.linalg.cholesky(cov), top_m=2
    )
    assert mined.found.tolist() == [[False, True]]
    assert mined.indices[0, 0] == -1 and torch.isnan(mined.distances[0, 0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_m": 0}, "top_m must be a positive int"),
        ({"mode": "easy"}, "mode must be one of"),
        ({"margin": -1.0}, "margin must be >= 0"),
    ],
)
def test_mining_errors(kwargs, message):
    anchors, positives, pool, al, pl, cov = make_problem(7)
    with pytest.raises(ValueError, match=message):
        two_stage_negatives(anchors, positives, pool, al, pl, torch.linalg.cholesky(cov), **kwargs)
    with pytest.raises(ValueError, match="pool_labels must have size 7"):
        two_stage_negatives(anchors, positives, pool, al, pl[:, :3], torch.linalg.cholesky(cov))

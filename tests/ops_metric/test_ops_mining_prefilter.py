from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from torchdoctor.ops import cholesky_factor, covariance, two_stage_negatives
from torchdoctor.ops.reference.mining import mine_negatives_loop


class _PoolSizedOutputs(TorchDispatchMode):
    """Counts the ops whose output is as large as the pool (views of the inputs excepted)."""

    def __init__(self, size: int, inputs: set[int]):
        super().__init__()
        self.size, self.inputs, self.ops = size, inputs, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() >= self.size:
                if t.untyped_storage().data_ptr() not in self.inputs:
                    self.ops.append(str(func))
        return out


def test_the_cosine_prefilter_makes_no_copy_of_the_pool():
    """F.normalize(pool) divided the whole (..., p, d) pool by its norms (a division broadcast
    over d): over half the op's time at seed 000's B = 64, K = 4, d = 64 with a pool of 8192
    per image, where the cosine matmul itself costs less (oracle round 7). The norms now divide
    the (..., n, p) products; the choice is unchanged."""
    gen = torch.Generator().manual_seed(0)
    batch, k, d, p = 4, 4, 16, 2048
    anchors = torch.randn(batch, k, d, generator=gen)
    positives = anchors + 0.3 * torch.randn(batch, k, d, generator=gen)
    pool = torch.randn(batch, p, d, generator=gen)
    pool[0, 5] = 0  # a zero row: cosine 0, as with F.normalize
    pool_labels = torch.randint(1, 50, (batch, p), generator=gen)
    anchor_labels = torch.randint(1, 50, (batch, k), generator=gen)
    chol, _ = cholesky_factor(covariance(torch.randn(batch, 64, d, generator=gen), 0.3))
    args = (anchors, positives, pool, anchor_labels, pool_labels, chol)
    inputs = {t.untyped_storage().data_ptr() for t in args}
    with _PoolSizedOutputs(pool.numel(), inputs) as outputs:
        mined = two_stage_negatives(*args, top_m=32, check=False)
    assert outputs.ops == []
    # the same choice as the loop over the top 32 by F.normalize cosines
    cosine = F.normalize(anchors, dim=-1) @ F.normalize(pool, dim=-1).mT
    cosine = cosine.masked_fill(anchor_labels[..., None] == pool_labels[..., None, :], -2)
    top = cosine.topk(32, dim=-1).indices
    for b in range(batch):
        indices, _ = mine_negatives_loop(
            anchors[b], positives[b], pool[b], anchor_labels[b], pool_labels[b],
            chol[b] @ chol[b].mT, candidates=top[b].tolist(),
        )
        assert mined.indices[b].tolist() == indices


@pytest.mark.parametrize("layout", ["per-image", "shared", "expanded", "leading-one"])
def test_candidates_are_gathered_without_an_index_over_features(layout):
    """take_along_dim wrapped (remainder) and gathered an int64 index expanded to (..., n, M, d):
    8x slower than one index_select of flat rows, as slow as the exact distances of the
    candidates it gathered (oracle round 7). Every pool layout picks what a lone call picks."""
    gen = torch.Generator().manual_seed(1)
    batch, n, d, p, m = 3, 4, 8, 40, 6
    anchors = torch.randn(batch, n, d, generator=gen, dtype=torch.float64)
    positives = anchors + 0.5 * torch.randn(batch, n, d, generator=gen, dtype=torch.float64)
    shared = torch.randn(p, d, generator=gen, dtype=torch.float64)
    pool = {
        "per-image": torch.randn(batch, p, d, generator=gen, dtype=torch.float64),
        "shared": shared,
        "expanded": shared.expand(batch, p, d),
        "leading-one": shared.unsqueeze(0),
    }[layout]
    pool_labels = torch.randint(0, 5, (p,), generator=gen)
    anchor_labels = torch.randint(0, 5, (batch, n), generator=gen)
    chol, _ = cholesky_factor(covariance(torch.randn(batch, 30, d, generator=gen,
                                                     dtype=torch.float64), 0.2))
    args = (anchors, positives, pool, anchor_labels, pool_labels, chol)
    with _Int64Outputs(n * m * d) as outputs:
        mined = two_stage_negatives(*args, top_m=m, check=False)
    assert outputs.ops == []
    for b in range(batch):
        own = pool if pool.ndim == 2 else pool[b if pool.shape[0] > 1 else 0]
        alone = two_stage_negatives(anchors[b], positives[b], own, anchor_labels[b],
                                    pool_labels, chol[b], top_m=m, check=False)
        assert torch.equal(mined.indices[b], alone.indices)
        torch.testing.assert_close(mined.distances[b], alone.distances)
    leaf = pool.detach().clone().requires_grad_()
    two_stage_negatives(anchors, positives, leaf, anchor_labels, pool_labels, chol,
                        top_m=m).distances.sum().backward()
    assert leaf.grad is not None and leaf.grad.count_nonzero() > 0


class _Int64Outputs(TorchDispatchMode):
    """Records ops that make an int64 tensor of at least ``size`` entries."""

    def __init__(self, size: int):
        super().__init__()
        self.size, self.ops = size, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.long and t.numel() >= self.size:
                self.ops.append(str(func))
        return out

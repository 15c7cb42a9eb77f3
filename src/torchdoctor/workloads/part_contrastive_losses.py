"""The per-step pieces of seed 000's part-aware contrastive loss, slow and fast.

Both variants compute, for a batch of two augmented views:

1. part sampling: the ``K`` positions of largest feature energy in each image's feature map;
2. matching: the parts of view 2 permuted to match view 1's (minimum total Euclidean cost);
3. Sigma-plus: per image, the covariance of its ``2K`` matched parts plus ``ridge * I``;
4. PaC: for every part of view 1 (anchor), Mahalanobis distance under its image's Sigma-plus to
   its matched part (positive) and to every part of the other images (negatives); semi-hard
   choice (``d_ap < d_an < d_ap + margin``, else the hardest; ties to the lowest pool index);
   loss ``relu(d_ap - d_an + margin)``;
5. SoC: a distance between each image's view-1 and view-2 part covariances (plus ridge).

The slow functions are seed 000's "before" (Python loops, ``.item()``, CPU scipy matching, one
``linalg.solve`` per pair, a per-image matrix logarithm); the fast ones are batched from
torchdoctor's ops.

Example:
    >>> fmap = torch.randn(2, 8, 4, 4)
    >>> parts, positions = sample_parts_slow(fmap, 3)
    >>> parts.shape, torch.equal(positions, sample_positions_fast(fmap, 3))
    (torch.Size([2, 3, 8]), True)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def _op(module: str, name: str) -> Callable | None:
    """``torchdoctor.ops.<module>.<name>`` when that op exists, else None (a local fallback)."""
    try:
        return getattr(importlib.import_module(f"torchdoctor.ops.{module}"), name)
    except (ImportError, AttributeError):
        return None


# -- part sampling ---------------------------------------------------------------------------


def sample_parts_slow(fmap: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, per part: argmax of the energy map with an ``.item()``, then suppress it.

    Example:
        >>> parts, positions = sample_parts_slow(torch.randn(2, 4, 3, 3), 2)
        >>> parts.shape, positions.shape
        (torch.Size([2, 2, 4]), torch.Size([2, 2]))
    """
    parts, positions = [], []
    for b in range(fmap.shape[0]):
        energy = fmap[b].detach().pow(2).sum(0).flatten().clone()
        chosen = []
        for _ in range(k):
            j = int(energy.argmax().item())
            chosen.append(j)
            energy[j] = -float("inf")
        positions.append(chosen)
        parts.append(fmap[b].flatten(1)[:, chosen].t())
    return torch.stack(parts), torch.tensor(positions, device=fmap.device)


def sample_positions_fast(fmap: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K) flat positions of the K largest-energy cells, batched and detached.

    Example:
        >>> fmap = torch.zeros(1, 2, 2, 2)
        >>> fmap[0, :, 1, 0] = 5.0
        >>> sample_positions_fast(fmap, 1)
        tensor([[2]])
    """
    energy = fmap.detach().pow(2).sum(1).flatten(1)
    return energy.topk(k, dim=1).indices


def gather_parts(fmap: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, K, d) features at flat ``positions`` (differentiable in ``fmap``).

    Example:
        >>> fmap = torch.arange(8.0).reshape(1, 2, 2, 2)
        >>> gather_parts(fmap, torch.tensor([[3, 0]]))
        tensor([[[3., 7.],
                 [0., 4.]]])
    """
    b, d = fmap.shape[:2]
    flat = fmap.flatten(2)
    index = positions.unsqueeze(1).expand(b, d, positions.shape[1])
    return flat.gather(2, index).transpose(1, 2)


# -- matching ----------------------------------------------------------------------------------


def match_slow(parts1: torch.Tensor, parts2: torch.Tensor) -> torch.Tensor:
    """Per image: cost to the host, scipy's linear_sum_assignment; returns (B, K) columns.

    Example:
        >>> a = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
        >>> match_slow(a, a.flip(1)).tolist()
        [[1, 0]]
    """
    columns = []
    for b in range(parts1.shape[0]):
        cost = torch.cdist(parts1[b], parts2[b]).detach().cpu().numpy()
        _, cols = linear_sum_assignment(cost)
        columns.append(cols)
    return torch.as_tensor(np.stack(columns), device=parts1.device)


def match_fast(parts1: torch.Tensor, parts2: torch.Tensor, method: str = "exact") -> torch.Tensor:
    """All images in one batched call of torchdoctor.ops (exact or greedy); (B, K) columns.

    Example:
        >>> a = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
        >>> match_fast(a, a.flip(1)).tolist(), match_fast(a, a.flip(1), "greedy").tolist()
        ([[1, 0]], [[1, 0]])
    """
    from torchdoctor.ops.assignment import greedy_assignment, linear_assignment

    cost = torch.cdist(parts1.detach(), parts2.detach())
    if method == "exact":
        return linear_assignment(cost, check=False).columns
    if method == "greedy":
        return greedy_assignment(cost).columns
    raise ValueError(f"matching must be 'exact' or 'greedy', got {method!r}")


# -- covariance --------------------------------------------------------------------------------


def covariance_slow(x: torch.Tensor, ridge: float) -> torch.Tensor:
    """Per image torch.cov + ridge; x (B, n, d) -> (B, d, d).

    Example:
        >>> x = torch.randn(2, 6, 3, dtype=torch.float64)
        >>> torch.allclose(covariance_slow(x, 0.1), covariance_fast(x, 0.1))
        True
    """
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.stack([torch.cov(x[b].t()) + ridge * eye for b in range(x.shape[0])])


def covariance_fast(x: torch.Tensor, ridge: float) -> torch.Tensor:
    """Batched unbiased covariance + ridge; x (B, n, d) -> (B, d, d).

    Example:
        >>> covariance_fast(torch.tensor([[[0.0], [2.0]]]), ridge=1.0)
        tensor([[[3.]]])
    """
    covariance = _op("covariance", "covariance")
    if covariance is None:  # ops' covariance not there: the same formula, batched
        centered = x - x.mean(-2, keepdim=True)
        cov = centered.mT @ centered / (x.shape[-2] - 1)
    else:
        cov = covariance(x)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return cov + ridge * eye


# -- PaC ---------------------------------------------------------------------------------------


def _mahalanobis_solve(a: torch.Tensor, b: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    diff = b - a
    return torch.sqrt(diff @ torch.linalg.solve(cov, diff))


def pac_slow(
    parts1: torch.Tensor, parts2: torch.Tensor, cov: torch.Tensor, margin: float
) -> torch.Tensor:
    """One ``linalg.solve`` per (anchor, candidate) pair, choice made on the host.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> p1, p2 = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
        >>> cov = torch.eye(4).expand(2, 4, 4)
        >>> pac_slow(p1, p2, cov, margin=0.5).shape
        torch.Size([])
    """
    b, k, d = parts1.shape
    pool = torch.cat([parts1.reshape(b * k, d), parts2.reshape(b * k, d)])
    pool_image = torch.arange(b).repeat_interleave(k).repeat(2).tolist()
    losses = []
    for i in range(b):
        for j in range(k):
            anchor = parts1[i, j]
            d_ap = _mahalanobis_solve(anchor, parts2[i, j], cov[i])
            d_an = torch.stack(
                [
                    _mahalanobis_solve(anchor, pool[c], cov[i])
                    for c in range(pool.shape[0])
                    if pool_image[c] != i
                ]
            )
            ap, an = d_ap.item(), d_an.tolist()
            semi = [(v, c) for c, v in enumerate(an) if ap < v < ap + margin]
            _, chosen = min(semi) if semi else min((v, c) for c, v in enumerate(an))
            losses.append(torch.relu(d_ap - d_an[chosen] + margin))
    return torch.stack(losses).mean()


def pac_fast(
    parts1: torch.Tensor,
    parts2: torch.Tensor,
    cov: torch.Tensor,
    margin: float,
    top_m: int,
) -> torch.Tensor:
    """One Cholesky per image, whitened distances, two-stage (cosine top-M) semi-hard mining.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> p1, p2 = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
        >>> cov = torch.eye(4).expand(2, 4, 4).contiguous()
        >>> bool(pac_fast(p1, p2, cov, margin=0.5, top_m=6) >= 0)
        True
    """
    from torchdoctor.ops import cholesky_factor, two_stage_negatives

    b, k, d = parts1.shape
    chol, _ = cholesky_factor(cov, check=False)
    pool = torch.cat([parts1.reshape(b * k, d), parts2.reshape(b * k, d)])
    image = torch.arange(b, device=parts1.device)
    pool_image = image.repeat_interleave(k).repeat(2)
    anchor_image = image.unsqueeze(1).expand(b, k)
    mined = two_stage_negatives(
        parts1,
        parts2,
        pool,
        anchor_image,
        pool_image,
        chol,
        top_m=top_m,
        margin=margin,
        check=False,
    )
    return torch.relu(mined.positive_distances - mined.distances + margin).mean()


# -- SoC ---------------------------------------------------------------------------------------


class _LogmSPD(torch.autograd.Function):
    """Matrix logarithm of SPD matrices with the Daleckii-Krein derivative (finite when
    eigenvalues repeat: the divided difference falls back to 1/lambda)."""

    @staticmethod
    def forward(ctx, a):
        values, vectors = torch.linalg.eigh(a)
        ctx.save_for_backward(values, vectors)
        return vectors @ torch.diag_embed(values.log()) @ vectors.mT

    @staticmethod
    def backward(ctx, grad):
        values, vectors = ctx.saved_tensors
        log = values.log()
        dl = values.unsqueeze(-1) - values.unsqueeze(-2)
        dlog = log.unsqueeze(-1) - log.unsqueeze(-2)
        close = dl.abs() <= 1e-6 * values.abs().max(-1, keepdim=True).values.unsqueeze(-1)
        divided = torch.where(close, 1.0 / values.unsqueeze(-1), dlog / torch.where(close, 1.0, dl))
        inner = vectors.mT @ (0.5 * (grad + grad.mT)) @ vectors
        return vectors @ (divided * inner) @ vectors.mT


def spd_distance_local(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """fro or log_euclidean distance, batched (used when torchdoctor.ops has no spd_distance).

    Example:
        >>> a = torch.eye(2).expand(3, 2, 2)
        >>> spd_distance_local(a, 2 * a, "fro")
        tensor([1.4142, 1.4142, 1.4142])
    """
    if metric == "fro":
        return (a - b).flatten(-2).norm(dim=-1)
    if metric == "log_euclidean":
        return (_LogmSPD.apply(a) - _LogmSPD.apply(b)).flatten(-2).norm(dim=-1)
    raise ValueError(f"SoC metric must be 'fro' or 'log_euclidean' here, got {metric!r}")


def _spd_distance(a: torch.Tensor, b: torch.Tensor, metric: str, check: bool) -> torch.Tensor:
    spd_distance = _op("spd", "spd_distance")
    if spd_distance is None:
        return spd_distance_local(a, b, metric)
    return spd_distance(a, b, metric=metric, check=check)


def soc_slow(parts1, parts2, ridge: float, metric: str) -> torch.Tensor:
    """Per image: two covariances and their distance (log-Euclidean in the seed).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> p1, p2 = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
        >>> torch.allclose(soc_slow(p1, p2, 0.1, "fro"), soc_fast(p1, p2, 0.1, "fro"))
        True
    """
    cov1, cov2 = covariance_slow(parts1, ridge), covariance_slow(parts2, ridge)
    return torch.stack(
        [_spd_distance(cov1[i], cov2[i], metric, check=True) for i in range(parts1.shape[0])]
    ).mean()


def soc_fast(parts1, parts2, ridge: float, metric: str) -> torch.Tensor:
    """All images batched (``fro`` in the fast variant).

    Example:
        >>> x = torch.randn(2, 5, 3)
        >>> soc_fast(x, x, ridge=0.1, metric="fro")
        tensor(0.)
    """
    cov1, cov2 = covariance_fast(parts1, ridge), covariance_fast(parts2, ridge)
    return _spd_distance(cov1, cov2, metric, check=False).mean()

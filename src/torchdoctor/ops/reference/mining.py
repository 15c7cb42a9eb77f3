"""Naive negative mining: per anchor, per candidate, one ``linalg.solve`` (seed 000's "before").

Example:
    >>> import torch
    >>> pool = torch.tensor([[3.0, 0.0], [1.5, 0.0], [0.2, 0.0]])
    >>> mine_negatives_loop(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), pool,
    ...                     torch.tensor([0]), torch.tensor([1, 1, 1]), torch.eye(2))[0]
    [1]
"""

from __future__ import annotations

import math

import torch

__all__ = ["mine_negatives_loop"]


def _distance(a: torch.Tensor, c: torch.Tensor, cov: torch.Tensor) -> float:
    diff = c - a
    return float(torch.sqrt(torch.dot(diff, torch.linalg.solve(cov, diff))))


def mine_negatives_loop(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    pool: torch.Tensor,
    anchor_labels: torch.Tensor,
    pool_labels: torch.Tensor,
    cov: torch.Tensor,
    margin: float = 1.0,
    mode: str = "semihard",
    candidates: list[list[int]] | None = None,
) -> tuple[list[int], list[float]]:
    """One image: anchors ``(n, d)``, pool ``(p, d)``, ``cov`` ``(d, d)``.

    ``candidates[i]`` restricts anchor ``i`` to those pool indices (default: all). A negative
    whose distance is NaN is never chosen. Returns the chosen pool index per anchor (-1 when it
    has no negative with a non-NaN distance) and its distance (NaN then).

    Example:
        >>> mine_negatives_loop(torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1),
        ...                     torch.tensor([0]), torch.tensor([0]), torch.eye(1))
        ([-1], [nan])
    """
    indices, distances = [], []
    for i in range(anchors.shape[0]):
        d_ap = _distance(anchors[i], positives[i], cov)
        allowed = range(pool.shape[0]) if candidates is None else candidates[i]
        negatives = [
            (_distance(anchors[i], pool[j], cov), j)
            for j in allowed
            if int(pool_labels[j]) != int(anchor_labels[i])
        ]
        negatives = [(dist, j) for dist, j in negatives if not math.isnan(dist)]
        if not negatives:
            indices.append(-1)
            distances.append(float("nan"))
            continue
        semi = [(dist, j) for dist, j in negatives if d_ap < dist < d_ap + margin]
        chosen = semi if (mode == "semihard" and semi) else negatives
        # As the op: distances within 32 ulps of the smallest tie; the smallest index wins.
        best = min(dist for dist, _ in chosen)
        near = best + 32 * torch.finfo(anchors.dtype).eps * max(best, 1.0)
        j = min(j for dist, j in chosen if dist <= near)
        dist = next(dist for dist, k in chosen if k == j)
        indices.append(j)
        distances.append(dist)
    return indices, distances

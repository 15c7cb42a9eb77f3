"""Seed 000's "before": one ``torch.linalg.solve`` per (anchor, candidate) pair, in Python loops.

Example:
    >>> import torch
    >>> cov = torch.diag(torch.tensor([4.0, 1.0]))
    >>> pairwise_mahalanobis_loop(torch.tensor([[2.0, 0.0]]), torch.zeros(1, 2), cov).tolist()
    [[1.0]]
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "pairwise_mahalanobis_loop",
    "pairwise_mahalanobis_batched_solve",
    "pairwise_mahalanobis_inverse",
]


def pairwise_mahalanobis_loop(x: torch.Tensor, y: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """``(..., n, d)``, ``(..., m, d)``, ``(..., d, d)`` -> ``(..., n, m)``, one solve per pair.

    Example:
        >>> pairwise_mahalanobis_loop(torch.zeros(1, 1), torch.ones(1, 1), torch.eye(1)).item()
        1.0
    """
    batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2], cov.shape[:-2])
    count = math.prod(batch)  # (not -1: an empty x or y leaves the batch size ambiguous)
    x = x.expand(*batch, *x.shape[-2:]).reshape(count, *x.shape[-2:])
    y = y.expand(*batch, *y.shape[-2:]).reshape(count, *y.shape[-2:])
    cov = cov.expand(*batch, *cov.shape[-2:]).reshape(count, *cov.shape[-2:])
    if count == 0:
        return x.new_zeros(*batch, x.shape[1], y.shape[1])
    images = []
    for b in range(x.shape[0]):
        rows = []
        for i in range(x.shape[1]):
            row = []
            for j in range(y.shape[1]):
                diff = x[b, i] - y[b, j]
                solved = torch.linalg.solve(cov[b], diff)
                row.append(torch.sqrt(torch.dot(diff, solved)))
            rows.append(torch.stack(row) if row else x.new_zeros(0))
        images.append(torch.stack(rows) if rows else x.new_zeros(0, y.shape[1]))
    return torch.stack(images).reshape(*batch, x.shape[1], y.shape[1])


def _from_solved(x, y, solved_x, solved_y):
    """``d^2 = (x - y)^T (S x - S y)`` with ``S = inv(cov)`` applied already, all pairs."""
    diff = x.unsqueeze(-2) - y.unsqueeze(-3)
    solved_diff = solved_x.unsqueeze(-2) - solved_y.unsqueeze(-3)
    return (diff * solved_diff).sum(-1).clamp_min(0).sqrt()


def pairwise_mahalanobis_batched_solve(
    x: torch.Tensor, y: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """The obvious batched version: one ``linalg.solve`` per image, all points as right-hand sides.

    Example:
        >>> pairwise_mahalanobis_batched_solve(torch.zeros(1, 1), torch.ones(1, 1), torch.eye(1))
        tensor([[1.]])
    """
    batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    x = x.expand(*batch, *x.shape[-2:])
    y = y.expand(*batch, *y.shape[-2:])
    solved = torch.linalg.solve(cov, torch.cat([x, y], dim=-2).mT).mT
    n = x.shape[-2]
    return _from_solved(x, y, solved[..., :n, :], solved[..., n:, :])


def pairwise_mahalanobis_inverse(
    x: torch.Tensor, y: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """The explicit-inverse version (what not to do): ``inv(cov)`` applied to all points.

    Example:
        >>> pairwise_mahalanobis_inverse(torch.zeros(1, 1), torch.ones(1, 1), torch.eye(1))
        tensor([[1.]])
    """
    precision = torch.linalg.inv(cov)
    return _from_solved(x, y, x @ precision.mT, y @ precision.mT)

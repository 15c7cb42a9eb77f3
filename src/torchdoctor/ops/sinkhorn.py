"""Batched log-domain Sinkhorn (entropic optimal transport) and plan -> hard assignment.

Seed 000 prescribed "greedy or Sinkhorn matching on the GPU instead of CPU
linear_sum_assignment". This Sinkhorn runs every problem of a batch together, in the log
domain (stable for small ``eps``), and never synchronizes with the host unless asked to stop
early (``tol``): then it reads one number every ``check_every`` iterations for the whole batch.

Example:
    >>> import torch
    >>> from torchdoctor.ops.sinkhorn import sinkhorn, plan_to_assignment
    >>> cost = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    >>> result = sinkhorn(cost, eps=0.05, iters=50)
    >>> plan_to_assignment(result.plan).columns.tolist()
    [[0, 1]]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from torchdoctor.ops._validation import require_float, require_rank, require_same_device
from torchdoctor.ops.assignment import Assignment, greedy_assignment, linear_assignment

__all__ = ["SinkhornResult", "sinkhorn", "plan_to_assignment"]


class SinkhornResult(NamedTuple):
    """``plan`` ``(..., R, C)``; dual potentials ``f`` ``(..., R)`` and ``g`` ``(..., C)`` with
    ``plan = exp((f[..., :, None] + g[..., None, :] - cost) / eps)``."""

    plan: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor


def _log_marginal(weights: torch.Tensor | None, shape, name: str, like: torch.Tensor):
    size = shape[-1]
    if weights is None:
        return torch.full(
            shape, -math.log(size) if size else 0.0, dtype=like.dtype, device=like.device
        )
    require_float(weights, name)
    require_same_device(cost=like, **{name: weights})
    if weights.shape[-1:] != (size,):
        raise ValueError(
            f"sinkhorn: {name} must have shape (..., {size}) to match cost, got "
            f"{tuple(weights.shape)}; give one non-negative weight per "
            f"{'row' if name == 'a' else 'column'}"
        )
    return torch.log(weights.to(like.dtype)).expand(shape)


def _check_values(cost: torch.Tensor, batch_shape) -> None:
    """One host read for the batch: NaN, -inf, or a row/column with every pair forbidden."""
    flat = cost.detach().reshape(-1, *cost.shape[-2:])
    forbidden = torch.isposinf(flat)
    flags = torch.stack(
        [
            torch.isnan(flat).flatten(1).any(1),
            torch.isneginf(flat).flatten(1).any(1),
            forbidden.all(2).any(1) | forbidden.all(1).any(1),
        ]
    )
    if not bool(flags.any()):
        return
    kind, problem = (int(x) for x in flags.nonzero()[0])
    where = "the problem"
    if batch_shape:
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(problem), batch_shape))
        where = f"problem {index[0] if len(index) == 1 else index}"
    what = ["has NaN costs", "has -inf costs", "has a row or column whose pairs are all +inf"]
    raise ValueError(
        f"sinkhorn: {where} {what[kind]}; costs must be finite, with +inf only for forbidden "
        "pairs and at least one allowed pair in every row and column"
    )


def sinkhorn(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    eps: float = 0.1,
    iters: int = 100,
    tol: float | None = None,
    *,
    check_every: int = 10,
    check: bool = True,
) -> SinkhornResult:
    """Entropic OT plan between ``a`` (rows) and ``b`` (columns), batched over leading dims.

    Log-domain Sinkhorn with the same updates, in the same order, as POT's
    ``ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log")``: ``log v = log b - LSE_i(-C/eps +
    log u)``, then ``log u = log a - LSE_j(-C/eps + log v)``. ``a`` and ``b`` default to uniform
    weights (``1/R``, ``1/C``); ``+inf`` costs are forbidden pairs (zero mass). Differentiable.

    Stopping: with ``tol=None`` exactly ``iters`` iterations run and nothing synchronizes.
    With ``tol``, after iteration ``1, 1 + check_every, ...`` (as POT does) the column-marginal
    error ``||plan.sum(-2) - b||_2`` of every problem is computed and the loop stops when the
    largest is below ``tol``: one host read per check for the whole batch. ``check=True``
    validates the costs first (one host read).

    Example:
        >>> import torch
        >>> result = sinkhorn(torch.zeros(2, 3), eps=1.0, iters=5)
        >>> torch.allclose(result.plan, torch.full((2, 3), 1 / 6))
        True
    """
    require_float(cost, "cost")
    require_rank(cost, "cost", 2, layout="(..., rows, cols)")
    if not eps > 0:
        raise ValueError(f"sinkhorn: eps must be > 0, got {eps}; try 0.01 to 0.1 of the cost scale")
    if iters < 0 or check_every < 1:
        raise ValueError(
            f"sinkhorn: need iters >= 0 and check_every >= 1, got {iters} and {check_every}"
        )
    shape = cost.shape
    batch_shape = tuple(shape[:-2])
    if check:
        _check_values(cost, batch_shape)
    log_a = _log_marginal(a, (*batch_shape, shape[-2]), "a", cost)
    log_b = _log_marginal(b, (*batch_shape, shape[-1]), "b", cost)
    scaled = -cost / eps
    log_u = torch.zeros_like(log_a)
    log_v = torch.zeros_like(log_b)
    for iteration in range(iters):
        log_v = log_b - torch.logsumexp(scaled + log_u.unsqueeze(-1), dim=-2)
        log_u = log_a - torch.logsumexp(scaled + log_v.unsqueeze(-2), dim=-1)
        if tol is not None and iteration % check_every == 0:
            column_mass = torch.exp(scaled + log_u.unsqueeze(-1) + log_v.unsqueeze(-2)).sum(-2)
            error = torch.linalg.vector_norm(column_mass - log_b.exp(), dim=-1)
            if float(error.max()) < tol:  # the one host read per check
                break
    plan = torch.exp(scaled + log_u.unsqueeze(-1) + log_v.unsqueeze(-2))
    return SinkhornResult(plan, eps * log_u, eps * log_v)


def plan_to_assignment(plan: torch.Tensor, method: str = "greedy") -> Assignment:
    """Turn transport plans ``(..., R, C)`` into one-to-one hard assignments.

    ``method="greedy"`` (default, no host sync) takes the largest remaining entry of each plan
    in turn; ``method="exact"`` maximizes the total plan mass with :func:`linear_assignment`.
    ``total`` is the plan mass kept.

    Example:
        >>> import torch
        >>> plan = torch.tensor([[0.1, 0.4], [0.3, 0.2]])
        >>> plan_to_assignment(plan).columns.tolist()
        [1, 0]
    """
    if method == "greedy":
        return greedy_assignment(plan, maximize=True)
    if method == "exact":
        return linear_assignment(plan, maximize=True)
    raise ValueError(f"plan_to_assignment: method must be 'greedy' or 'exact', got {method!r}")

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

from torchdoctor.ops._flags import require_flag
from torchdoctor.ops._validation import (
    require_count,
    require_data,
    require_float,
    require_rank,
    require_real,
    require_same_device,
)
from torchdoctor.ops.assignment import (
    Assignment,
    _check_cost,
    greedy_assignment,
    linear_assignment,
)

__all__ = ["SinkhornResult", "sinkhorn", "plan_to_assignment"]


class SinkhornResult(NamedTuple):
    """``plan`` ``(..., R, C)``; dual potentials ``f`` ``(..., R)`` and ``g`` ``(..., C)`` with
    ``plan = exp((f[..., :, None] + g[..., None, :] - cost) / eps)``.

    Example:
        >>> import torch
        >>> result = sinkhorn(torch.zeros(2, 2), eps=1.0)
        >>> result.plan.sum().item(), tuple(result.f.shape), tuple(result.g.shape)
        (1.0, (2,), (2,))
    """

    plan: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor


def _marginal(weights: torch.Tensor | None, shape, name: str, like: torch.Tensor):
    """The weights broadcast to ``shape`` ``(..., size)``, in the cost's dtype (uniform if None)."""
    size = shape[-1]
    if weights is None:
        return torch.full(shape, 1 / size if size else 0.0, dtype=like.dtype, device=like.device)
    require_float(weights, name)
    require_same_device(cost=like, **{name: weights})
    side = "row" if name == "a" else "column"
    try:
        if weights.shape[-1:] != (size,):
            raise RuntimeError
        return weights.to(like.dtype).expand(shape)
    except RuntimeError:
        raise ValueError(
            f"sinkhorn: {name} must have shape (..., {size}) broadcastable to {tuple(shape)} "
            f"(the cost's batch shape, one weight per {side}), got {tuple(weights.shape)}"
        ) from None


def _log_weights(weights: torch.Tensor) -> torch.Tensor:
    """``log(weights)`` with a gradient of 0, not NaN, at zero weights: ``log(0) = -inf`` (the
    forward value is unchanged), but autograd's ``inf * 0`` is avoided by logging 1 there."""
    zero = weights == 0
    safe = torch.where(zero, torch.ones_like(weights), weights)
    return torch.where(zero, torch.full_like(weights, -math.inf), torch.log(safe))


def _check_values(
    cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, batch_shape, tolerance: float = 1e-5,
    eps: float = 1.0,
) -> None:
    """One host read for the batch: bad costs (NaN, -inf, a row or column with every pair
    forbidden, finite costs whose ``cost / eps`` overflows the dtype) or bad marginals
    (negative, NaN or infinite weights, no mass, totals apart by more than ``tolerance``,
    relative)."""
    require_data(cost=cost, a=a, b=b)
    flat = cost.detach().reshape(-1, *cost.shape[-2:])
    a = a.detach().reshape(flat.shape[0], -1)
    b = b.detach().reshape(flat.shape[0], -1)
    forbidden = torch.isposinf(flat)
    totals = a.double().sum(-1), b.double().sum(-1)
    bad_weights = [(w < 0).any(-1) | (~torch.isfinite(w)).any(-1) | ~(w.sum(-1) > 0)
                   for w in (a, b)]  # fmt: skip
    overflow = (torch.isinf(flat / eps) & torch.isfinite(flat)).flatten(1).any(1)
    scale = torch.maximum(totals[0].abs(), totals[1].abs())
    flags = torch.stack(
        [
            torch.isnan(flat).flatten(1).any(1),
            torch.isneginf(flat).flatten(1).any(1),
            forbidden.all(2).any(1) | forbidden.all(1).any(1),
            bad_weights[0],
            bad_weights[1],
            (totals[0] - totals[1]).abs() > tolerance * scale,
            overflow,
        ]
    )
    if not bool(flags.any()):
        return
    problem, kind = (int(x) for x in flags.T.nonzero()[0])  # the first bad problem
    where = "the problem"
    if batch_shape:
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(problem), batch_shape))
        where = f"problem {index[0] if len(index) == 1 else index}"
    what = [
        "has NaN costs",
        "has -inf costs",
        "has a row or column whose pairs are all +inf",
        "has row weights a that are negative, NaN, infinite or all zero",
        "has column weights b that are negative, NaN, infinite or all zero",
        f"has a.sum() = {float(totals[0][problem]):.6g} != b.sum() = "
        f"{float(totals[1][problem]):.6g} (balanced transport moves all of a onto b)",
        f"has finite costs too large for eps={eps:g}: cost / eps overflows {cost.dtype} "
        "(rescale the costs, raise eps, or compute in float64)",
    ]
    raise ValueError(
        f"sinkhorn: {where} {what[kind]}; costs must be finite, with +inf only for forbidden "
        "pairs and at least one allowed pair in every row and column, and a, b non-negative "
        "with equal positive totals (or check=False to skip this validation)"
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
    weights (``1/R``, ``1/C``); ``+inf`` costs are forbidden pairs (zero mass). Differentiable;
    a zero weight in ``a`` or ``b`` (its row or column gets no mass) has gradient 0, not NaN (a
    weight at 0 sits on the boundary of the log domain: only its one-sided derivative exists,
    and it is not computed), and the other entries' gradients are unaffected.

    Stopping: with ``tol=None`` exactly ``iters`` iterations run and nothing synchronizes.
    With ``tol``, after iteration ``1, 1 + check_every, ...`` (as POT does) the column-marginal
    error ``||plan.sum(-2) - b||_2`` of every problem is computed; a problem whose error is
    below ``tol`` is frozen from then on, so it ends exactly where a run on it alone would
    (POT's ``stopThr``), and the loop stops once every problem is: one host read per check for
    the whole batch. ``check=True`` (one host read) validates the inputs first: finite costs
    (``+inf`` only for forbidden pairs, an allowed pair in every row and column, ``cost / eps``
    within the dtype's range), marginals finite, non-negative, with equal positive totals
    (within 1e-5, relative, or the weights' dtype's eps: 1/3 rounded to float16); an error
    names the first bad problem. Problems
    with no rows or no columns give an empty plan and zero potentials.

    The result has the cost's dtype. Half precision (float16/bfloat16) is computed in float32
    and rounded once at the end: ``-cost / eps`` overflows float16 already at ``cost / eps >
    65504``, and half-precision sums would break the marginals.

    Example:
        >>> import torch
        >>> result = sinkhorn(torch.zeros(2, 3), eps=1.0, iters=5)
        >>> torch.allclose(result.plan, torch.full((2, 3), 1 / 6))
        True
    """
    require_float(cost, "cost")
    require_rank(cost, "cost", 2, layout="(..., rows, cols)")
    require_real(eps, "sinkhorn: eps")
    check = require_flag(check, "sinkhorn: check")
    if tol is not None:
        require_real(tol, "sinkhorn: tol")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(
            f"sinkhorn: eps must be finite and > 0, got {eps}; try 0.01 to 0.1 of the cost scale"
        )
    iters = require_count(iters, "sinkhorn: iters", what="an int >= 0")
    check_every = require_count(check_every, "sinkhorn: check_every", least=1, what="an int >= 1")
    if tol is not None and not tol >= 0:
        raise ValueError(f"sinkhorn: tol must be None or >= 0, got {tol}")
    if cost.dtype in (torch.float16, torch.bfloat16):
        wide = sinkhorn(cost.float(), a, b, eps, iters, tol, check_every=check_every, check=check)
        return SinkhornResult(*(t.to(cost.dtype) for t in wide))
    shape = cost.shape
    batch_shape = tuple(shape[:-2])
    weights_a = _marginal(a, (*batch_shape, shape[-2]), "a", cost)
    weights_b = _marginal(b, (*batch_shape, shape[-1]), "b", cost)
    if cost.numel() == 0:  # no rows, no columns or no problems: nothing to transport
        return SinkhornResult(
            torch.zeros_like(cost), torch.zeros_like(weights_a), torch.zeros_like(weights_b)
        )
    if check:  # (weights rounded to their dtype, 1/3 in float16, miss equal totals by its eps)
        tolerance = max([1e-5] + [torch.finfo(w.dtype).eps for w in (a, b)
                                  if isinstance(w, torch.Tensor) and w.is_floating_point()])
        _check_values(cost, weights_a, weights_b, batch_shape, tolerance, eps)
    log_a, log_b = _log_weights(weights_a), _log_weights(weights_b)
    scaled = -cost / eps
    log_u = torch.zeros_like(log_a)
    log_v = torch.zeros_like(log_b)
    done = None  # with tol: the problems that met it at a check, frozen from then on
    for iteration in range(iters):
        new_v = log_b - torch.logsumexp(scaled + log_u.unsqueeze(-1), dim=-2)
        new_u = log_a - torch.logsumexp(scaled + new_v.unsqueeze(-2), dim=-1)
        if done is None:
            log_u, log_v = new_u, new_v
        else:
            log_u = torch.where(done.unsqueeze(-1), log_u, new_u)
            log_v = torch.where(done.unsqueeze(-1), log_v, new_v)
        if tol is not None and iteration % check_every == 0:
            column_mass = torch.exp(scaled + log_u.unsqueeze(-1) + log_v.unsqueeze(-2)).sum(-2)
            met = torch.linalg.vector_norm(column_mass - weights_b, dim=-1) < tol
            done = met if done is None else done | met
            if bool(done.all()):  # the one host read per check
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
    if method not in ("greedy", "exact"):
        raise ValueError(f"plan_to_assignment: method must be 'greedy' or 'exact', got {method!r}")
    _check_cost(plan, "plan_to_assignment", "plan")
    if method == "greedy":
        return greedy_assignment(plan, maximize=True)
    try:
        return linear_assignment(plan, maximize=True)
    except ValueError as error:  # e.g. NaN mass: say so in this function's words
        message = str(error).removeprefix("linear_assignment: ").replace(" costs", " plan entries")
        raise ValueError(f"plan_to_assignment(method='exact'): {message}") from None

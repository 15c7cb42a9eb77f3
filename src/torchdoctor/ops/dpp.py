"""Greedy MAP inference for determinantal point processes, batched (Chen, Zhang & Zhou 2018).

"Fast Greedy MAP Inference for Determinantal Point Process to Improve Recommendation
Diversity" (NeurIPS 2018): each step adds the item with the largest marginal gain
``log det(L_{Y+i}) - log det(L_Y)``, read off an incrementally grown Cholesky factor: ``d_i^2``
(the squared residual of item ``i`` after projecting out the selected items) drops by
``e_i^2`` per step, where ``e`` is the new Cholesky row. ``O(N k^2)`` time and ``O(N k)``
memory per problem; every problem of a batch advances together, so there is one vector step per
selected item and no host sync.

Seed 003 (FrameFusion / CDPruner-style video token pruning) ran this per frame with an
``.item()`` argmax per iteration; ``select_tokens_per_segment`` in ``ops.tokens`` batches it.

Example:
    >>> import torch
    >>> from torchdoctor.ops.dpp import dpp_greedy
    >>> kernel = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.5]])
    >>> dpp_greedy(kernel, k=2).indices.tolist()
    [0, 2]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from torchdoctor.ops._validation import (
    require_finite,
    require_float,
    require_rank,
    require_same_device,
    require_size,
    require_square,
)

__all__ = ["DppSelection", "dpp_greedy"]


class DppSelection(NamedTuple):
    """``indices`` ``(..., K)`` int64 in selection order, ``-1`` after a problem stopped;
    ``log_det`` ``(...)``: log-determinant of the kernel restricted to the selected items."""

    indices: torch.Tensor
    log_det: torch.Tensor


def _resolve_k(k, batch_shape, n: int, max_k: int | None, device) -> tuple[torch.Tensor, int]:
    if isinstance(k, torch.Tensor):
        if k.dtype.is_floating_point or k.dtype == torch.bool:
            raise TypeError(f"dpp_greedy: k must be an int or an integer tensor, got {k.dtype}")
        try:
            k_batch = k.to(device).expand(batch_shape)
        except RuntimeError:
            raise ValueError(
                f"dpp_greedy: k of shape {tuple(k.shape)} does not broadcast to the batch shape "
                f"{tuple(batch_shape)}; give one k per problem"
            ) from None
        if max_k is None:
            max_k = int(k.max()) if k.numel() else 0  # the one host read of a k tensor
    else:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"dpp_greedy: k must be a non-negative int, got {k!r}")
        k_batch = torch.full(batch_shape, k, dtype=torch.long, device=device)
        max_k = k if max_k is None else max_k
    if max_k < 0:
        raise ValueError(f"dpp_greedy: k and max_k must be >= 0, got max_k={max_k}")
    # k > N is clamped: a problem stops when its items run out.
    return k_batch.reshape(-1), min(max_k, n)


def dpp_greedy(
    kernel: torch.Tensor | None = None,
    *,
    features: torch.Tensor | None = None,
    quality: torch.Tensor | None = None,
    k: int | torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-10,
    max_k: int | None = None,
    check: bool = False,
) -> DppSelection:
    """Greedy DPP MAP selection of up to ``k`` items per problem, batched over leading dims.

    The kernel is ``L = diag(q) K diag(q)`` with ``K`` either ``kernel`` ``(..., N, N)`` or
    ``features @ features.mT`` for ``features`` ``(..., N, d)`` (never materialized: each step
    computes the one kernel row it needs, ``O(N d)``), and ``q = quality`` ``(..., N)`` (all
    ones if ``None``): the conditional, relevance-weighted kernel of CDPruner.

    Args:
        k: items per problem, an int or an integer tensor broadcastable to the batch shape. ``k``
            larger than the number of selectable items is clamped (the problem stops when its
            items run out); ``k = 0`` selects nothing.
        mask: ``(..., N)`` bool, False for items that may not be selected (e.g. padding).
        eps: a problem stops when the best remaining gain ``d_i^2`` is ``<= eps``: this is how a
            rank-deficient or non-PSD kernel ends (no error is raised). The default suits
            float64; in float32 an exhausted kernel leaves rounding residue of about
            ``1e-7 * max(diag)``, so pass e.g. ``eps=1e-6 * max(diag)`` there.
        max_k: the output width when ``k`` is a tensor; if ``None`` it is ``k.max()`` (one host
            read). An int ``k`` costs no sync.
        check: validate that the inputs are finite (one host sync).

    The selection is discrete, so the inputs are detached: ``log_det`` carries no gradient.

    Returns:
        :class:`DppSelection` with ``indices`` ``(..., min(max_k, N))`` in selection order.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> quality = torch.tensor([1.0, 2.0, 1.0])
        >>> dpp_greedy(features=features, quality=quality, k=3, eps=1e-6).indices  # rank 2
        tensor([ 1,  2, -1])
    """
    if (kernel is None) == (features is None):
        raise ValueError(
            "dpp_greedy: give exactly one of kernel= (..., N, N) or features= (..., N, d)"
        )
    source = kernel if kernel is not None else features
    name = "kernel" if kernel is not None else "features"
    require_float(source, name)
    if kernel is not None:
        require_square(kernel, "kernel")
    else:
        require_rank(features, "features", 2, layout="(..., N, d)")
    *batch_shape, n, width = source.shape
    batch_shape = tuple(batch_shape)
    for extra_name, extra in (("quality", quality), ("mask", mask)):
        if extra is not None:
            require_same_device(**{name: source, extra_name: extra})
            require_rank(extra, extra_name, 1, layout="(..., N)")
            require_size(extra, extra_name, -1, n, f"the number of items N of {name}")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(
            f"dpp_greedy: mask must be a bool tensor, got {mask.dtype}; use mask.bool()"
        )
    if not eps >= 0:
        raise ValueError(f"dpp_greedy: eps must be >= 0, got {eps}; use e.g. 1e-10")
    if check:
        require_finite(**{name: source, "quality": quality})
    device, dtype = source.device, source.dtype
    k_flat, steps = _resolve_k(k, batch_shape, n, max_k, device)
    batch = math.prod(batch_shape)
    source = source.detach().reshape(batch, n, width)  # a discrete choice: no autograd
    if quality is not None:
        quality = quality.detach().to(dtype).expand(*batch_shape, n).reshape(batch, n)
    q = quality

    if kernel is not None:
        gains = torch.diagonal(source, dim1=-2, dim2=-1).clone()
    else:
        gains = (source * source).sum(-1)
    if q is not None:
        gains = gains * q * q
    if mask is not None:
        gains = gains.masked_fill(~mask.expand(*batch_shape, n).reshape(batch, n), -math.inf)
    gains = torch.nan_to_num(gains, nan=-math.inf)

    rows_e = torch.zeros(batch, steps, n, dtype=dtype, device=device)  # Cholesky rows e
    allowed = k_flat.unsqueeze(1) > torch.arange(steps, device=device)  # (B, steps)
    items, bests, oks = [], [], []
    active = torch.ones(batch, dtype=torch.bool, device=device)
    tiny = torch.finfo(dtype).tiny
    for step in range(steps):
        best, item = gains.max(dim=-1)
        active = active & (best > eps) & allowed[:, step]
        items.append(item)
        bests.append(best)
        oks.append(active)
        if step == steps - 1:
            break
        index = item.view(batch, 1, 1)
        if kernel is not None:
            row = source.gather(1, index.expand(batch, 1, n))  # (B, 1, N)
        else:
            picked = source.gather(1, index.expand(batch, 1, width))
            row = torch.bmm(picked, source.transpose(1, 2))
        if q is not None:
            row = row * (q * q.gather(1, item.unsqueeze(1))).unsqueeze(1)
        if step > 0:
            previous = rows_e[:, :step]
            at_item = previous.gather(2, index.expand(batch, step, 1)).transpose(1, 2)
            row = torch.baddbmm(row, at_item, previous, alpha=-1)
        e = rows_e[:, step]
        # best > eps >= 0 for active problems; stopped ones may turn NaN, which is harmless
        # (NaN > eps is False, so they stay stopped).
        torch.mul(row.squeeze(1), best.rsqrt().unsqueeze(1), out=e)
        gains = torch.addcmul(gains, e, e, value=-1).scatter_(1, item.unsqueeze(1), -math.inf)
    if steps == 0:
        indices = torch.empty(batch, 0, dtype=torch.long, device=device)
        log_det = torch.zeros(batch, dtype=dtype, device=device)
    else:
        ok = torch.stack(oks, dim=-1)
        indices = torch.where(ok, torch.stack(items, dim=-1), -1)
        gains_taken = torch.stack(bests, dim=-1).clamp(min=tiny).log()
        log_det = torch.where(ok, gains_taken, 0.0).sum(-1)
    return DppSelection(indices.reshape(*batch_shape, steps), log_det.reshape(batch_shape))

"""POT's log-domain Sinkhorn, one problem at a time (the per-problem loop the batched op replaces).

Needs POT (``pip install pot``), a test-only dependency of torchdoctor.

Example:
    >>> import torch
    >>> plan, f, g = sinkhorn_reference(torch.zeros(1, 2, 2, dtype=torch.float64), iters=5)
    >>> plan.tolist()
    [[[0.25, 0.25], [0.25, 0.25]]]
"""

from __future__ import annotations

import math

import torch

__all__ = ["sinkhorn_reference"]


def sinkhorn_reference(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    eps: float = 0.1,
    iters: int = 100,
    tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ot.sinkhorn(..., method="sinkhorn_log")`` per problem; returns ``(plan, f, g)``.

    ``tol=None`` runs all ``iters`` iterations (POT's stopThr set to 0).

    Example:
        >>> import torch
        >>> sinkhorn_reference(torch.zeros(3, 2, dtype=torch.float64), iters=3)[0].shape
        torch.Size([3, 2])
    """
    import ot

    *batch_shape, rows, cols = cost.shape
    count = math.prod(batch_shape)
    flat = cost.reshape(count, rows, cols)
    a_flat = None if a is None else a.expand(*batch_shape, rows).reshape(count, rows)
    b_flat = None if b is None else b.expand(*batch_shape, cols).reshape(count, cols)
    plans, fs, gs = [], [], []
    for problem in range(count):
        matrix = flat[problem].detach().cpu().numpy()
        wa = [] if a_flat is None else a_flat[problem].detach().cpu().numpy()
        wb = [] if b_flat is None else b_flat[problem].detach().cpu().numpy()
        plan, log = ot.sinkhorn(
            wa,
            wb,
            matrix,
            eps,
            method="sinkhorn_log",
            numItermax=iters,
            stopThr=0.0 if tol is None else tol,
            log=True,
            warn=False,
        )
        plans.append(torch.as_tensor(plan))
        fs.append(eps * torch.as_tensor(log["log_u"]))
        gs.append(eps * torch.as_tensor(log["log_v"]))

    def stack(items, size):
        if not items:
            return torch.empty(0, *size, dtype=cost.dtype)
        return torch.stack(items).to(cost.dtype)

    plan_t = stack(plans, (rows, cols)).reshape(*batch_shape, rows, cols).to(cost.device)
    f_t = stack(fs, (rows,)).reshape(*batch_shape, rows).to(cost.device)
    g_t = stack(gs, (cols,)).reshape(*batch_shape, cols).to(cost.device)
    return plan_t, f_t, g_t

"""Chen, Zhang & Zhou's greedy DPP MAP algorithm written plainly, one problem at a time.

The kernel is materialized, each step reads the argmax back to the host with ``.item()`` (as
seed 003 did) and the loop stops as soon as the best gain is ``<= eps``.

Example:
    >>> import torch
    >>> kernel = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.5]])
    >>> indices, log_det = dpp_greedy_reference(kernel, k=2)
    >>> indices, round(log_det, 4)
    ([0, 2], -0.6931)
"""

from __future__ import annotations

import math

import torch

__all__ = ["dpp_greedy_reference", "dpp_kernel"]


def dpp_kernel(features: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
    """``diag(q) F F^T diag(q)`` for one problem (``q`` all ones if ``None``).

    Example:
        >>> import torch
        >>> dpp_kernel(torch.eye(2), torch.tensor([1.0, 2.0])).tolist()
        [[1.0, 0.0], [0.0, 4.0]]
    """
    kernel = features @ features.T
    if quality is not None:
        kernel = quality[:, None] * kernel * quality[None, :]
    return kernel


def dpp_greedy_reference(
    kernel: torch.Tensor, k: int, eps: float = 1e-10, mask: torch.Tensor | None = None
) -> tuple[list[int], float]:
    """Greedy MAP for one ``(N, N)`` kernel; returns ``(selected indices, log det)``.

    Example:
        >>> import torch
        >>> dpp_greedy_reference(torch.eye(3), k=5)[0]
        [0, 1, 2]
    """
    if kernel.dtype in (torch.float16, torch.bfloat16):  # as the op: computed in float32
        kernel = kernel.float()
    # As the op: an item masked out or with a NaN diagonal is never selected and has no
    # effect on the others (its row may hold NaN): run on the other items' kernel only.
    usable = ~torch.diagonal(kernel).isnan()
    if mask is not None:
        usable &= mask.to(torch.bool)
    if not bool(usable.all()):
        keep = usable.nonzero().flatten()
        picked, log_det = dpp_greedy_reference(kernel[keep][:, keep], k, eps)
        return [int(keep[i]) for i in picked], log_det
    n = kernel.shape[0]
    cis = torch.zeros(min(k, n), n, dtype=kernel.dtype, device=kernel.device)
    gains = torch.diagonal(kernel).clone()
    # As the op: gains equal but for rounding (at step t, 4 (t + 1) eps of each one's starting
    # gain) tie with the best, and the lowest index among them is taken.
    tol = gains.nan_to_num(0, 0, 0).clamp(min=0) * (4 * torch.finfo(kernel.dtype).eps)
    selected: list[int] = []
    log_det = 0.0
    while len(selected) < min(k, n):
        top, times = int(torch.argmax(gains)), len(selected) + 1
        tied = gains + tol * times >= gains[top] - tol[top] * times
        item = int(tied.nonzero()[0, 0].item())  # one host read per iteration
        best = float(gains[item].item())
        if not best > eps:
            break
        selected.append(item)
        log_det += math.log(best)
        step = len(selected) - 1
        e = (kernel[item, :] - cis[:step, item] @ cis[:step, :]) / math.sqrt(best)
        cis[step, :] = e
        gains = gains - e * e
        gains[item] = -math.inf
    return selected, log_det

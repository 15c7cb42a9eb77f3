"""Seed 003's token pruning: a ``torch.where`` per segment and a greedy DPP with ``.item()``.

Each segment (frame) is found with its own ``torch.where`` (one host sync per segment), its
tokens normalized, its kernel built, and the plain greedy DPP run with an ``.item()`` argmax
per selected token. Selection rules are those of ``torchdoctor.ops.select_tokens_per_segment``.

Example:
    >>> import torch
    >>> features = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    >>> ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    >>> quality = torch.arange(8.0)
    >>> select_tokens_reference(features, ids, 0.5, quality=quality, method="topk").tolist()
    [2, 3, 6, 7]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from torchdoctor.ops.reference.dpp import dpp_greedy_reference

__all__ = ["select_tokens_reference"]


def _quota(count: int, keep_ratio: float | None, keep_per_segment: int | None) -> int:
    if keep_ratio is not None:
        return min(math.ceil(count * keep_ratio * (1 - 1e-12)), count)  # (0.3 * 10: 3)
    return min(keep_per_segment, count)


def _greedy_cosine(
    unit: torch.Tensor, quality: torch.Tensor, usable: torch.Tensor, k: int
) -> list[int]:
    selected: list[int] = []
    closest = torch.zeros(unit.shape[0], dtype=unit.dtype, device=unit.device)
    # As the op: scores within 16 ulps of their qualities tie with the best (lowest wins).
    eps = max(torch.finfo(quality.dtype).eps, torch.finfo(unit.dtype).eps)
    tol = torch.where(usable, quality.abs(), 0) * (16 * eps)
    for step in range(min(k, int(usable.sum()))):  # NaN-quality tokens are never chosen
        score = quality.clone() if step == 0 else quality * (1 - closest)
        score[selected] = -math.inf
        score[~usable] = -math.inf
        top = int(torch.argmax(score))
        tied = score + tol >= score[top] - tol[top]
        item = int(tied.nonzero()[0, 0].item())  # one host read per token
        selected.append(item)
        similarity = unit @ unit[item]
        closest = similarity if step == 0 else torch.maximum(closest, similarity)
    return selected


def select_tokens_reference(
    features: torch.Tensor,
    segment_ids: torch.Tensor,
    keep_ratio: float | None = None,
    keep_per_segment: int | None = None,
    quality: torch.Tensor | None = None,
    method: str = "dpp",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Per-segment loop version of ``select_tokens_per_segment``; returns sorted kept positions.

    Example:
        >>> import torch
        >>> ids = torch.tensor([-1, 0, 0, 0])
        >>> select_tokens_reference(torch.eye(4), ids, keep_per_segment=1).tolist()
        [0, 1]
    """
    if features.dtype in (torch.float16, torch.bfloat16):  # as the op: computed in float32
        features = features.float()
    if quality is not None and quality.dtype in (torch.float16, torch.bfloat16):
        quality = quality.float()
    kept = [torch.where(segment_ids < 0)[0]]
    for segment in torch.unique(segment_ids[segment_ids >= 0], sorted=True).tolist():
        index = torch.where(segment_ids == segment)[0]  # one host sync per segment
        k = _quota(len(index), keep_ratio, keep_per_segment)
        q = quality[index] if quality is not None else torch.ones(len(index), dtype=features.dtype, device=features.device)
        # A NaN quality: never selected, last in the fill (kept only to meet the quota).
        usable = ~torch.isnan(q)
        big = torch.finfo(q.dtype).max  # (as the op: +-inf counts as the largest magnitude)
        q = torch.where(usable, q, 0).clamp(-big, big)
        if method == "topk" or k == 0:
            selected: list[int] = []
        else:
            unit = F.normalize(features[index], dim=-1)
            if method == "dpp":
                if quality is not None:  # eps relative to the largest q^2 of the segment
                    top = float(q.abs().max())
                    q = q / top if top > 0 else q
                kernel = unit @ unit.T
                if quality is not None:
                    kernel = q[:, None] * kernel * q[None, :]
                nonzero = features[index].norm(dim=-1) > 0  # exact diagonal: q^2 (0 if zero)
                kernel.diagonal().copy_(torch.where(nonzero, q * q, 0))
                selected, _ = dpp_greedy_reference(kernel, k, eps=eps, mask=usable)
            else:
                selected = _greedy_cosine(unit, q, usable, k)
        if len(selected) < k:  # fill by quality, then by position; NaN-quality tokens last
            rest = [i for i in range(len(index)) if i not in selected]
            rest.sort(key=lambda i: (not bool(usable[i]), -float(q[i])))
            selected = selected + rest[: k - len(selected)]
        kept.append(index[torch.tensor(selected, dtype=torch.long, device=index.device)])
    return torch.sort(torch.cat(kept)).values

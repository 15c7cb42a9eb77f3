"""Similarity distribution matching (SDM) loss, as in IRRA, batched and sync-free.

SDM (Jiang & Ye, "Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image Person
Retrieval", CVPR 2023) compares, for every row, the softmax of scaled cosine similarities
against the normalized "same identity" distribution with a KL divergence, in both directions
(a -> b and b -> a), and sums the two means. Seed 004 uses it next to CE, with an optional
cross-batch memory of past features as extra gallery columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _kl_rows(
    scores: torch.Tensor, log_target: torch.Tensor, keep: torch.Tensor | None
) -> torch.Tensor:
    """Mean over rows of sum_j softmax(s)_j * (log_softmax(s)_j - log_target_j)."""
    if keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    terms = F.softmax(scores, dim=-1) * (F.log_softmax(scores, dim=-1) - log_target)
    if keep is not None:
        terms = torch.where(keep, terms, torch.zeros_like(terms))
    return terms.sum(dim=-1).mean(dim=-1)


def _check(a_feats: torch.Tensor, b_feats: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    if not (isinstance(a_feats, torch.Tensor) and isinstance(b_feats, torch.Tensor)):
        raise TypeError("sdm_loss expects tensors for a_feats and b_feats")
    if a_feats.dim() < 2 or a_feats.shape != b_feats.shape:
        raise ValueError(
            f"a_feats and b_feats must have the same shape (..., batch, dim); got "
            f"{tuple(a_feats.shape)} and {tuple(b_feats.shape)}: pair row i of a with row i of b"
        )
    if not a_feats.is_floating_point():
        raise TypeError(f"features must be floating point, got {a_feats.dtype}; call .float()")
    if labels.shape[-1] != a_feats.shape[-2]:
        raise ValueError(
            f"{name} has shape {tuple(labels.shape)} but the batch has {a_feats.shape[-2]} rows; "
            f"pass one {name} entry per row, shape (..., batch)"
        )


def sdm_loss(
    a_feats: torch.Tensor,
    b_feats: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: float | torch.Tensor = 50.0,
    image_ids: torch.Tensor | None = None,
    factor: float = 0.3,
    eps: float = 1e-8,
    *,
    gallery_feats: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    gallery_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SDM loss of paired features ``a_feats[i] <-> b_feats[i]`` with identity ``labels[i]``.

    Matches IRRA's ``compute_sdm(a_feats, b_feats, labels, logit_scale, image_ids, factor,
    eps)`` exactly, arguments in the same order (``a`` plays the image side, ``b`` the text
    side). Half-precision features are computed in float32 (IRRA keeps its labels in float32:
    in float16 ``eps`` rounds to 0 and the loss would turn NaN); the loss is then float32. The target of row ``i``
    is the "same identity" matrix divided by the row sums; with ``image_ids``, pairs of the same
    image weigh 1 and other pairs of the same identity weigh ``factor`` (IRRA's soft labels,
    including its broadcast of the sums over columns, which only matters when image groups of
    one identity differ in size). Inputs are batched over leading dimensions:
    ``a_feats, b_feats: (..., B, D)``, ``labels, image_ids: (..., B)``; returns shape ``(...)``.

    Optional gallery (e.g. ``CrossBatchMemory.gallery()``): ``gallery_feats (M, D)`` and
    ``gallery_labels (M,)`` are appended as extra (constant) ``b`` columns of the a -> b
    direction, whose target is then row-normalized over B + M columns; the b -> a direction
    stays B x B. ``gallery_mask (M,)`` (bool) excludes invalid rows without a host sync.
    ``image_ids`` cannot be combined with a gallery.

    No host synchronization; non-finite inputs give a non-finite loss (checking would sync).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 2])
        >>> loss = sdm_loss(a, b, labels)
        >>> bool(loss > 0), loss.shape
        (True, torch.Size([]))
    """
    _check(a_feats, b_feats, labels, "labels")
    if image_ids is not None:
        _check(a_feats, b_feats, image_ids, "image_ids")
    for name, value in (("factor", factor), ("eps", eps)):
        if isinstance(value, (bool, torch.Tensor)) or not isinstance(value, (int, float)):
            raise TypeError(
                f"sdm_loss: {name} must be a Python number, got {type(value).__name__}; the "
                "order is (a_feats, b_feats, labels, logit_scale, image_ids, factor, eps), as "
                "IRRA's compute_sdm"
            )
    dtype = torch.promote_types(a_feats.dtype, torch.float32)  # half precision: in float32
    a_feats, b_feats = a_feats.to(dtype), b_feats.to(dtype)
    a_unit = a_feats / a_feats.norm(dim=-1, keepdim=True)
    b_unit = b_feats / b_feats.norm(dim=-1, keepdim=True)

    same = (labels.unsqueeze(-1) == labels.unsqueeze(-2)).to(dtype)
    if image_ids is not None:
        same_image = (image_ids.unsqueeze(-1) == image_ids.unsqueeze(-2)).to(dtype)
        same = (same - same_image) * factor + same_image
    # IRRA divides by labels.sum(dim=1) broadcast along the last dimension.
    target = same / same.sum(dim=-1).unsqueeze(-2)
    log_target = torch.log(target + eps)

    b_to_a = logit_scale * (b_unit @ a_unit.transpose(-1, -2))
    a_to_b = b_to_a.transpose(-1, -2)
    if gallery_feats is None:
        return _kl_rows(a_to_b, log_target, None) + _kl_rows(b_to_a, log_target, None)

    if image_ids is not None:
        raise ValueError(
            "image_ids cannot be combined with a gallery (gallery rows have no image ids); "
            "drop image_ids or the gallery"
        )
    if gallery_labels is None:
        raise ValueError("gallery_feats needs gallery_labels, one label per gallery row")
    if gallery_feats.dim() != 2 or gallery_feats.shape[-1] != a_feats.shape[-1]:
        raise ValueError(
            f"gallery_feats must be (M, {a_feats.shape[-1]}); got {tuple(gallery_feats.shape)}"
        )
    if gallery_labels.shape != gallery_feats.shape[:1]:
        raise ValueError(
            f"gallery_labels must be ({gallery_feats.shape[0]},); got {tuple(gallery_labels.shape)}"
        )
    gallery_unit = gallery_feats.detach().to(dtype)
    gallery_unit = gallery_unit / gallery_unit.norm(dim=-1, keepdim=True)
    extra_scores = logit_scale * (a_unit @ gallery_unit.transpose(-1, -2))  # (..., B, M)
    scores = torch.cat([a_to_b, extra_scores], dim=-1)
    extra_same = (labels.unsqueeze(-1) == gallery_labels.to(labels.device)).to(dtype)
    keep = None
    if gallery_mask is not None:
        if gallery_mask.shape != gallery_labels.shape or gallery_mask.dtype != torch.bool:
            raise ValueError(
                f"gallery_mask must be a bool tensor of shape {tuple(gallery_labels.shape)}; got "
                f"{gallery_mask.dtype} {tuple(gallery_mask.shape)}"
            )
        extra_same = extra_same * gallery_mask.to(dtype)
        ones = torch.ones(a_feats.shape[-2], dtype=torch.bool, device=gallery_mask.device)
        keep = torch.cat([ones, gallery_mask])
    same_all = torch.cat([same, extra_same], dim=-1)
    log_target_all = torch.log(same_all / same_all.sum(dim=-1, keepdim=True) + eps)
    return _kl_rows(scores, log_target_all, keep) + _kl_rows(b_to_a, log_target, None)

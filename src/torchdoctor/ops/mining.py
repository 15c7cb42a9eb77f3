"""Negative mining under a Mahalanobis metric: cheap cosine prefilter, exact distance on top-M.

Seed 000 computed the Mahalanobis distance from every anchor to every negative of the batch
((B-1)*K per positive). ``two_stage_negatives`` ranks the pool by cosine similarity (one
matmul), keeps the ``top_m`` most similar negatives per anchor and computes the exact
Mahalanobis distance on those only; ``exhaustive_negatives`` is the all-pairs baseline.

The choice rule (``mode="semihard"``): among negatives with ``d_ap < d_an < d_ap + margin``
(farther than the positive by more than rounding: a copy of the positive is not) take the
smallest ``d_an``; when none qualifies take the hardest (smallest ``d_an``) negative.
``mode="hard"`` always takes the hardest. Ties go to the smallest pool index: distances within
``32 eps * max(d, 1)`` of the smallest (``eps`` of the compute dtype) are ties, since distances
equal in exact arithmetic (points placed symmetrically about the anchor) round a few ulps
apart. With ``top_m >= pool size`` the two functions return identical results. A negative
whose distance is NaN (a NaN in the inputs with ``check=False``, or a singular ``chol``) is
never chosen; an anchor left without any other negative (or facing an empty pool) gets index
-1, distance NaN and ``found=False``. A NaN ``d_ap`` never qualifies as semi-hard, so the
hardest negative is taken. Results stay right with NaN inputs, but gradients may not: in
``exhaustive_negatives`` a NaN pool row makes the anchors' gradients NaN (``cdist``'s backward
multiplies 0 by NaN); use ``check=True`` or clean the inputs when training.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> anchors, positives = torch.randn(2, 4, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    >>> pool, pool_labels = torch.randn(2, 20, 8, generator=g), torch.arange(20).expand(2, 20)
    >>> chol = torch.eye(8).expand(2, 8, 8)
    >>> mined = two_stage_negatives(anchors, positives, pool, torch.full((2, 4), 99), pool_labels,
    ...                             chol, top_m=5)
    >>> mined.indices.shape, bool(mined.found.all())
    (torch.Size([2, 4]), True)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from torchdoctor.ops._flags import require_flag
from torchdoctor.ops._validation import (
    describe,
    require_count,
    require_finite,
    require_float,
    require_integer,
    require_rank,
    require_real,
    require_same_device,
    require_same_dtype,
    require_size,
)
from torchdoctor.ops.mahalanobis import _wide, mahalanobis_to_candidates, pairwise_mahalanobis

__all__ = ["MinedNegatives", "two_stage_negatives", "exhaustive_negatives"]

_MODES = ("semihard", "hard")


class MinedNegatives(NamedTuple):
    """Result of negative mining, one entry per anchor (shape ``(..., n)``).

    ``indices``: chosen pool index (long), -1 where the anchor has no negative (no pool entry
    with another label, an empty pool, or only negatives whose distance is NaN);
    ``distances``: Mahalanobis ``d_an`` of the choice (differentiable), NaN where none;
    ``positive_distances``: ``d_ap`` (differentiable); ``found``: bool, a negative was chosen
    (``indices >= 0``). All four share the broadcast batch shape of the inputs.

    Example:
        >>> MinedNegatives(*(torch.zeros(1),) * 4).indices
        tensor([0.])
    """

    indices: torch.Tensor
    distances: torch.Tensor
    positive_distances: torch.Tensor
    found: torch.Tensor


def _validate(anchors, positives, pool, anchor_labels, pool_labels, chol, margin, mode, check):
    for name, value in (("anchors", anchors), ("positives", positives), ("pool", pool)):
        require_float(value, name)
        require_rank(value, name, 2, layout="(..., n, d)")
    require_float(chol, "chol")
    require_rank(chol, "chol", 2, layout="(..., d, d)")
    d = anchors.shape[-1]
    require_size(positives, "positives", -2, anchors.shape[-2], "one positive per anchor")
    for name, value in (("positives", positives), ("pool", pool), ("chol", chol)):
        require_size(value, name, -1, d, "the feature size d of anchors")
    require_size(chol, "chol", -2, d, "the feature size d of anchors")
    require_integer(anchor_labels, "anchor_labels")
    require_integer(pool_labels, "pool_labels")
    require_rank(anchor_labels, "anchor_labels", 1, layout="(..., n)")
    require_rank(pool_labels, "pool_labels", 1, layout="(..., p)")
    require_size(anchor_labels, "anchor_labels", -1, anchors.shape[-2], "one label per anchor")
    require_size(pool_labels, "pool_labels", -1, pool.shape[-2], "one label per pool entry")
    require_same_device(
        anchors=anchors,
        positives=positives,
        pool=pool,
        chol=chol,
        anchor_labels=anchor_labels,
        pool_labels=pool_labels,
    )
    require_same_dtype(anchors=anchors, positives=positives, pool=pool, chol=chol)
    _require_common_batch(
        ("anchors", anchors, 2, "(..., n, d)"),
        ("positives", positives, 2, "(..., n, d)"),
        ("pool", pool, 2, "(..., p, d)"),
        ("chol", chol, 2, "(..., d, d)"),
        ("anchor_labels", anchor_labels, 1, "(..., n)"),
        ("pool_labels", pool_labels, 1, "(..., p)"),
    )
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    require_real(margin, "margin")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    if require_flag(check, "check"):
        require_finite(anchors=anchors, positives=positives, pool=pool, chol=chol)


def _require_common_batch(*inputs: tuple[str, torch.Tensor, int, str]) -> tuple[int, ...]:
    """Broadcast the batch dims of ``(name, tensor, core_rank, layout)`` inputs, or raise.

    The error names the first input that does not fit, the inputs before it, and a shape that
    would.

    Example:
        >>> _require_common_batch(("anchors", torch.zeros(2, 4, 3), 2, "(..., n, d)"),
        ...                       ("anchor_labels", torch.zeros(4), 1, "(..., n)"))
        (2,)
    """
    batch: tuple[int, ...] = ()
    seen: list[str] = []
    for name, value, core, layout in inputs:
        own = tuple(value.shape[: value.ndim - core])
        try:
            batch = tuple(torch.broadcast_shapes(batch, own))
        except RuntimeError:
            fits = batch + tuple(value.shape[value.ndim - core :])
            raise ValueError(
                f"{name} {layout} has batch dimensions {own} ({describe(value)}) that do not "
                f"broadcast with the batch dimensions {batch} of {', '.join(seen)}; give "
                f"{name} the same leading dimensions or size-1 ones, e.g. shape {fits}"
            ) from None
        seen.append(name)
    return batch


def _positive_distances(anchors, positives, chol):
    return mahalanobis_to_candidates(
        anchors, positives.unsqueeze(-2), chol.unsqueeze(-3), check=False
    ).squeeze(-1)


def _choose(d_ap, d_an, valid, index, margin, mode) -> MinedNegatives:
    """Pick one candidate per anchor; ``d_an``, ``valid``, ``index``: ``(..., n, m)``.

    All four broadcast to one batch shape first, so every field comes out ``(..., n)``. A NaN
    distance is never chosen: it counts as an invalid candidate (no host sync: masks only).
    """
    shape = torch.broadcast_shapes(d_ap.unsqueeze(-1).shape, d_an.shape, valid.shape, index.shape)
    d_an, valid, index = d_an.expand(shape), valid.expand(shape), index.expand(shape)
    d_ap = d_ap.unsqueeze(-1).expand(shape[:-1] + (1,)).squeeze(-1).contiguous()
    if shape[-1] == 0:  # empty pool (a shape, not a value: no sync): no anchor has a negative
        return MinedNegatives(
            indices=torch.full(shape[:-1], -1, dtype=torch.long, device=d_an.device),
            distances=d_an.new_full(shape[:-1], float("nan")),
            positive_distances=d_ap,
            found=torch.zeros(shape[:-1], dtype=torch.bool, device=d_an.device),
        )
    valid = valid & ~d_an.isnan()
    inf = torch.tensor(float("inf"), dtype=d_an.dtype, device=d_an.device)
    hardest = torch.where(valid, d_an, inf)
    if mode == "semihard":
        gap = d_an - d_ap.unsqueeze(-1)
        # d_ap and d_an come from two formulas (one distance per pair, all pairs at once): a
        # negative equal to the positive lands a few ulps either side; it is not farther
        ulps = 64 * torch.finfo(d_an.dtype).eps * d_ap.unsqueeze(-1).abs().clamp_min(1.0)
        qualifies = valid & (gap > ulps) & (gap < margin)
        has_semi = qualifies.any(-1, keepdim=True)
        key = torch.where(has_semi, torch.where(qualifies, d_an, inf), hardest)
    else:
        key = hardest
    best = key.min(-1, keepdim=True).values  # no NaN in key: a valid one sits at best if found
    # Distances equal in exact arithmetic (symmetric points) land a few ulps apart, each pair
    # computed on its own (measured: up to 16 ulps of max(d, 1)): within 32 of the best, a tie.
    near = best + 32 * torch.finfo(d_an.dtype).eps * best.clamp_min(1.0)
    at_best = valid & (key <= near)
    big = torch.iinfo(torch.long).max
    chosen = torch.where(at_best, index, big).min(-1, keepdim=True).values
    found = valid.any(-1)
    picked = at_best & (index == chosen)
    slot = picked.to(torch.uint8).argmax(-1, keepdim=True)  # first True: differentiable gather
    distances = d_an.gather(-1, slot).squeeze(-1)
    nan = torch.full_like(distances, float("nan"))
    minus_one = torch.full_like(found, -1, dtype=torch.long)
    return MinedNegatives(
        indices=torch.where(found, chosen.squeeze(-1), minus_one),
        distances=torch.where(found, distances, nan),
        positive_distances=d_ap,
        found=found,
    )


def _narrow(mined: MinedNegatives, dtype: torch.dtype) -> MinedNegatives:
    return mined._replace(
        distances=mined.distances.to(dtype),
        positive_distances=mined.positive_distances.to(dtype),
    )


def _top_m(key: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``key.topk(m)`` with ties at the cut going to the smallest indices, sync-free.

    ``topk`` keeps an arbitrary subset of the entries equal to its smallest kept value (the
    cut), and rounding decides between values equal in exact arithmetic: entries within 8 ulps
    of the cut are tied. Their slots (the last ones: values come sorted) are refilled with the
    first tied entries in index order, found with a running count of ties and one
    ``searchsorted``.

    Example:
        >>> _top_m(torch.tensor([[1.0, 2.0, 1.0, 1.0, 1.0]]), 3)[1].tolist()
        [[1, 0, 2]]
    """
    values, index = key.topk(m, dim=-1)
    cut = values[..., -1:]
    # Cosines equal in exact arithmetic (p and 3p) round apart: within 8 ulps they tie.
    band = 8 * torch.finfo(key.dtype).eps
    tied = values <= cut + band  # (..., m): the slots holding a value tied with the cut
    first_tied_slot = m - tied.sum(-1, keepdim=True, dtype=torch.int32)
    wanted = torch.arange(1, m + 1, dtype=torch.int32, device=key.device) - first_tied_slot
    at_cut = (key >= cut - band) & (key <= cut + band)
    ties_so_far = at_cut.cumsum(-1, dtype=torch.int32)  # int32: far faster than int64
    nth_tie = torch.searchsorted(ties_so_far, wanted.clamp(min=1))  # index of the wanted-th tie
    return values, torch.where(tied, nth_tie, index)


def _gather_rows(pool: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``pool[..., index[..., n, m], :]`` as ``(..., n, m, d)``, ``pool``'s leading dims
    broadcast with ``index``'s: one ``index_select`` of flat row numbers. ``take_along_dim``
    wrapped and gathered an index expanded over ``d`` (``(..., n, m, d)`` int64): 8x slower,
    as slow as the exact distances it was choosing candidates for (oracle round 7).

    Example:
        >>> pool = torch.arange(6.0).view(3, 2)
        >>> _gather_rows(pool, torch.tensor([[2, 0]])).tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    for dim in range(pool.ndim - 2):  # an expanded pool: no copy of it for the flat view
        if pool.stride(dim) == 0 and pool.shape[dim] > 1:
            pool = pool.narrow(dim, 0, 1)
    p, d = pool.shape[-2], pool.shape[-1]
    batch = index.shape[:-2]
    own = pool.shape[:-2]
    first = torch.arange(math.prod(own), device=index.device).mul_(p)  # row 0 of each pool
    first = first.view((1,) * (len(batch) - len(own)) + tuple(own)).expand(batch)
    rows = index + first.reshape(*batch, 1, 1)
    flat = pool.reshape(-1, d).index_select(0, rows.reshape(-1))
    return flat.view(*index.shape, d)


def _negative_mask(anchor_labels, pool_labels):
    return anchor_labels.unsqueeze(-1) != pool_labels.unsqueeze(-2)


def exhaustive_negatives(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    pool: torch.Tensor,
    anchor_labels: torch.Tensor,
    pool_labels: torch.Tensor,
    chol: torch.Tensor,
    margin: float = 1.0,
    mode: str = "semihard",
    check: bool = True,
) -> MinedNegatives:
    """Exact mining: Mahalanobis distance from every anchor to every pool entry.

    Same arguments and result as ``two_stage_negatives`` without ``top_m``; the pool is
    whitened once per covariance (``pairwise_mahalanobis``), not once per anchor, so the
    distances have no second derivatives (see ``pairwise_mahalanobis``).

    Example:
        >>> chol = torch.eye(2)
        >>> pool = torch.tensor([[3.0, 0.0], [1.5, 0.0], [0.2, 0.0]])
        >>> mined = exhaustive_negatives(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), pool,
        ...                              torch.tensor([0]), torch.tensor([1, 1, 1]), chol)
        >>> mined.indices.tolist()   # 1.0 < 1.5 < 1.0 + margin: the semi-hard one
        [1]
        >>> pool[1, 0] = float("nan")   # check=False: a NaN distance is never chosen
        >>> exhaustive_negatives(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), pool,
        ...                      torch.tensor([0]), torch.tensor([1, 1, 1]), chol,
        ...                      check=False).indices.tolist()
        [2]
    """
    _validate(anchors, positives, pool, anchor_labels, pool_labels, chol, margin, mode, check)
    dtype = anchors.dtype
    anchors, positives, pool, chol = _wide(anchors), _wide(positives), _wide(pool), _wide(chol)
    d_ap = _positive_distances(anchors, positives, chol)
    d_an = pairwise_mahalanobis(anchors, pool, chol=chol, check=False)
    valid = _negative_mask(anchor_labels, pool_labels)
    d_an, valid = torch.broadcast_tensors(d_an, valid)
    index = torch.arange(pool.shape[-2], device=pool.device).expand_as(valid)
    return _narrow(_choose(d_ap, d_an, valid, index, margin, mode), dtype)


def two_stage_negatives(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    pool: torch.Tensor,
    anchor_labels: torch.Tensor,
    pool_labels: torch.Tensor,
    chol: torch.Tensor,
    top_m: int = 32,
    margin: float = 1.0,
    mode: str = "semihard",
    check: bool = True,
) -> MinedNegatives:
    """Mine one negative per anchor: cosine top-M prefilter, then exact Mahalanobis on M only.

    Args:
        anchors: ``(..., n, d)``; positives: ``(..., n, d)`` (one per anchor).
        pool: ``(..., p, d)`` candidate negatives (a shared pool broadcasts, e.g. ``(p, d)``);
            ``p = 0`` is allowed (nothing is found).
        anchor_labels: ``(..., n)`` and pool_labels: ``(..., p)`` integer ids; pool entries
            with the anchor's label are never chosen, nor are those at NaN distance (with
            ``check=False`` a NaN pool row is skipped, and also never takes a prefilter slot).
        chol: ``(..., d, d)`` lower Cholesky factor of each batch element's covariance
            (``cholesky_factor``); all leading dims broadcast.
        top_m: candidates kept per anchor after the cosine prefilter (equal cosines at the
            cut, within 8 ulps, keep the smaller pool indices); ``>= p`` means no prefilter
            and the result
            equals ``exhaustive_negatives`` exactly. The prefilter (a ``topk`` with tie
            handling) costs about what the exact distances it saves do at pools of a few
            hundred: on one CPU thread, seed 000's B = 64, K = 4, d = 64 with a pool of 252
            per image ran 1.1-2x slower than ``exhaustive_negatives``, a pool of 8192 ~3x
            faster (oracle round 7); prefer exhaustive mining for small pools.
        margin: semi-hard window ``d_ap < d_an < d_ap + margin``, in Mahalanobis units.
        mode: ``"semihard"`` (hardest when none qualifies) or ``"hard"``.
        check: NaN/Inf check of the inputs (one host sync); ``False`` on a hot path, which
            then runs without any host sync.

    Returns:
        ``MinedNegatives(indices, distances, positive_distances, found)``, each ``(..., n)``
        where ``...`` is the broadcast of all inputs' leading dims (a mismatch is a ValueError
        naming the argument). The cosines and distances square the features, as
        ``F.normalize`` and ``torch.cdist`` do: in float32, features of about ``1e19`` or more
        (``1e-19`` or less) overflow (underflow) and the ranking is no longer meaningful;
        rescale such features first (the choice does not depend on a common scale).

    Example:
        >>> chol = torch.eye(2)
        >>> pool = torch.tensor([[3.0, 0.0], [1.5, 0.0], [0.2, 0.0]])
        >>> mined = two_stage_negatives(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), pool,
        ...                             torch.tensor([0]), torch.tensor([1, 1, 1]), chol, top_m=2)
        >>> mined.indices.tolist(), round(mined.distances.item(), 3)
        ([1], 1.5)
    """
    top_m = require_count(top_m, "top_m", least=1)
    _validate(anchors, positives, pool, anchor_labels, pool_labels, chol, margin, mode, check)
    p = pool.shape[-2]
    if top_m >= p:
        return exhaustive_negatives(
            anchors, positives, pool, anchor_labels, pool_labels, chol, margin, mode, False
        )
    dtype = anchors.dtype
    anchors, positives, pool, chol = _wide(anchors), _wide(positives), _wide(pool), _wide(chol)
    d_ap = _positive_distances(anchors, positives, chol)
    valid_all = _negative_mask(anchor_labels, pool_labels)
    with torch.no_grad():  # the prefilter only ranks; gradients flow through exact distances
        # Pool norms divide the (..., n, p) products, not the (..., p, d) pool: normalizing
        # the pool (a division broadcast over d) was over half the op's time at p = 8192
        # (oracle round 7). ``F.normalize``'s eps, so zero rows still read a cosine of 0.
        norms = torch.linalg.vector_norm(pool, dim=-1).clamp_min(1e-12).unsqueeze(-2)
        similarity = (F.normalize(anchors, dim=-1) @ pool.mT) / norms
        similarity, valid_all = torch.broadcast_tensors(similarity, valid_all)
        valid_all = valid_all & ~similarity.isnan()  # a NaN row or anchor never takes a slot
        neg_inf = torch.tensor(float("-inf"), dtype=similarity.dtype, device=similarity.device)
        values, index = _top_m(torch.where(valid_all, similarity, neg_inf), top_m)  # (..., n, M)
    valid = values > neg_inf
    candidates = _gather_rows(pool, index)  # (..., n, M, d)
    d_an = mahalanobis_to_candidates(anchors, candidates, chol.unsqueeze(-3), check=False)
    return _narrow(_choose(d_ap, d_an, valid, index, margin, mode), dtype)

"""Per-segment token selection (video token pruning, seed 003) in one batched call.

Seed 003 pruned the visual tokens of each frame with a greedy DPP, one frame at a time: a
``torch.where`` per frame (one host sync each) and an ``.item()`` argmax per selected token.
Here every frame is packed into one padded ``(S, L, d)`` batch, the similarity kernels of all
frames are one batched matmul, and the greedy steps of all frames advance together.

Example:
    >>> import torch
    >>> from torchdoctor.ops.tokens import select_tokens_per_segment
    >>> features = torch.randn(10, 16, generator=torch.Generator().manual_seed(0))
    >>> segment_ids = torch.tensor([-1, 0, 0, 0, 0, 1, 1, 1, 1, -1])
    >>> kept = select_tokens_per_segment(features, segment_ids, keep_per_segment=2)
    >>> kept.shape, bool(kept[0] == 0), bool(kept[-1] == 9)
    (torch.Size([6]), True, True)
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F

from torchdoctor.ops._tokens_host import ROUNDING, select_dpp_host, tokens_to_keep
from torchdoctor.ops._validation import (
    require_count,
    require_data,
    require_eps,
    require_float,
    require_integer,
    require_real,
    require_same_device,
    require_size,
    widen_integer,
)
from torchdoctor.ops.dpp import greedy_steps, host_engine
from torchdoctor.ops.segments import pad_segments

__all__ = ["select_tokens_per_segment", "tokens_to_keep"]

_METHODS = ("dpp", "greedy_cosine", "topk")
_BACKENDS = ("auto", "torch", "numpy", "numba")
#: the sort key of text tokens (negative ids); a segment id ``i >= 0`` has key ``i + min``
#: (order kept, every key below this one), so no id, not even int64's max, collides with it
_NO_SEGMENT = torch.iinfo(torch.long).max
_KEY_SHIFT = torch.iinfo(torch.long).min


def _check_arguments(features, segment_ids, keep_ratio, keep_per_segment, quality, method):
    """Raise for a bad argument; return ``keep_ratio`` as a Python float and
    ``keep_per_segment`` as a Python int (each or ``None``)."""
    require_float(features, "features")
    if features.ndim != 2:
        raise ValueError(
            f"features must have shape (n, d), got {tuple(features.shape)}; select per sequence "
            "(for a batch, offset the segment ids of each sequence and concatenate)"
        )
    require_integer(segment_ids, "segment_ids")
    if segment_ids.ndim != 1:
        raise ValueError(f"segment_ids must have shape (n,), got {tuple(segment_ids.shape)}")
    require_size(segment_ids, "segment_ids", 0, features.shape[0], "the token count n of features")
    require_same_device(features=features, segment_ids=segment_ids, quality=quality)
    require_data(features=features, segment_ids=segment_ids, quality=quality)
    if quality is not None:
        require_float(quality, "quality")
        if quality.shape != segment_ids.shape:
            raise ValueError(
                f"quality must have shape (n,) = {tuple(segment_ids.shape)}, got "
                f"{tuple(quality.shape)}; give one relevance score per token"
            )
    if (keep_ratio is None) == (keep_per_segment is None):
        raise ValueError("give exactly one of keep_ratio (0..1) or keep_per_segment (an int >= 0)")
    if keep_ratio is not None:
        require_real(keep_ratio, "keep_ratio")
        keep_ratio = _ratio_value(keep_ratio)  # every engine computes in Python floats
    if keep_ratio is not None and not 0 <= keep_ratio <= 1:
        raise ValueError(f"keep_ratio must be in [0, 1], got {keep_ratio}")
    if keep_per_segment is not None:
        keep_per_segment = require_count(keep_per_segment, "keep_per_segment", what="an int >= 0")
        keep_per_segment = min(keep_per_segment, features.shape[0])  # clamped (even past int64)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method == "topk" and quality is None:
        raise ValueError(
            "method='topk' ranks tokens by quality: pass quality= (one score per token)"
        )
    return keep_ratio, keep_per_segment


def _simplest_between(low: Fraction, high: Fraction) -> Fraction:
    """The fraction with the smallest denominator in ``[low, high]`` (``0 <= low <= high``)."""
    whole = math.floor(low)
    if whole == low or whole + 1 <= high:
        return Fraction(whole if whole == low else whole + 1)
    return whole + 1 / _simplest_between(1 / (high - whole), 1 / (low - whole))


def _ratio_value(keep_ratio) -> float:
    """``keep_ratio`` as a Python float. A 0-dim tensor narrower than float64 holds its dtype's
    rounding of the ratio meant (``torch.tensor(0.1)`` is 0.10000000149, and ceil(10 * it)
    keeps 2 tokens, not 1; float16 0.7 is 0.7002): it stands for the simplest fraction its
    dtype rounds to that value (0.1, 0.7, 1/3), which is what the engines then compute with.

    Example:
        >>> _ratio_value(torch.tensor(0.3)), _ratio_value(torch.tensor(1 / 3, dtype=torch.bfloat16))
        (0.3, 0.3333333333333333)
    """
    value = float(keep_ratio)
    dtype = keep_ratio.dtype if isinstance(keep_ratio, torch.Tensor) else torch.float64
    if not dtype.is_floating_point or torch.finfo(dtype).bits >= 64 or not 0 < value < 1:
        return value
    ulp = Fraction(torch.finfo(dtype).eps) * 2 ** (math.frexp(value)[1] - 1)
    reach = ulp / 2  # the values that round to this one (checked below: ties, powers of 2)
    simplest = float(_simplest_between(Fraction(value) - reach, Fraction(value) + reach))
    return simplest if torch.tensor(simplest, dtype=dtype).item() == value else value


def _sizes(segment_ids, keep_ratio, keep_per_segment) -> tuple[torch.Tensor, int, int, int, int]:
    """(compact ids, number of segments, longest segment, tokens kept in all, start); the four
    sizes in one host read.

    The compact ids number the segments ``0..S-1`` in id order (``-1`` for text), so that the
    padded batch is sized by the number of segments present, not by the largest id (ids may be
    frame timestamps). ``start`` is the position of the first image token when the segments
    are stored one after the other in id order, all of the same length (seed 003's layout: the
    padded batch is then a view of the features, no gather); otherwise -1.
    """
    n = segment_ids.shape[0]
    if n == 0:
        return segment_ids.long(), 0, 0, 0, -1
    keys = torch.where(segment_ids < 0, _NO_SEGMENT, segment_ids.long() + _KEY_SHIFT)
    sorted_keys, order = torch.sort(keys, stable=True)
    starts = torch.ones(n, dtype=torch.bool, device=keys.device)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    run = torch.cumsum(starts.long(), 0) - 1  # segments are runs 0..S-1, text the last run
    run_counts = torch.zeros(n, dtype=torch.long, device=keys.device)
    run_counts.scatter_add_(0, run, torch.ones_like(run))
    real_run = torch.zeros(n, dtype=torch.bool, device=keys.device)
    real_run.scatter_(0, run, sorted_keys != _NO_SEGMENT)
    kept = torch.where(real_run, tokens_to_keep(run_counts, keep_ratio, keep_per_segment), 0)
    text = (segment_ids < 0).sum()
    image = sorted_keys != _NO_SEGMENT
    compact = torch.empty_like(run).scatter_(0, order, torch.where(image, run, -1))
    segments = real_run.sum()
    longest = torch.where(real_run, run_counts, 0).max()
    step = torch.arange(n, device=keys.device)
    in_order = (~image | (order - step == order[0])).all()
    full = (segments * longest == n - text) & (n > text)
    start = torch.where(in_order & full, order[0], -1)
    sizes = torch.stack([segments, longest, text + kept.sum(), start]).tolist()  # one sync
    return compact, sizes[0], sizes[1], sizes[2], sizes[3]


def _greedy_cosine(unit, quality, mask, wanted, steps):
    """Max-min diversity: start at the best-quality token, then repeatedly the token with the
    largest ``quality * (1 - max cosine to the chosen ones)``. ``O(L d)`` per step."""
    segments, length, _ = unit.shape
    chosen = torch.zeros(segments, length, dtype=torch.bool, device=unit.device)
    closest = torch.zeros(segments, length, dtype=unit.dtype, device=unit.device)
    # Scores equal in exact arithmetic (symmetric tokens) round apart: within 16 ulps of their
    # qualities they tie with the best, and the lowest position wins (as in the DPP).
    eps = max(torch.finfo(quality.dtype).eps, torch.finfo(unit.dtype).eps)
    tol = torch.where(mask, quality.abs(), 0) * (16 * eps)
    for step in range(steps):
        if step == 0:
            score = quality
        else:
            score = quality * (1 - closest)
        score = score.masked_fill(chosen | ~mask, -math.inf)
        best, top = score.max(dim=-1, keepdim=True)
        item = (score + tol >= best - tol.gather(1, top)).max(dim=-1).indices
        take = (step < wanted) & (step < mask.sum(-1))
        hit = torch.arange(length, device=unit.device) == item.unsqueeze(1)
        chosen = chosen | (hit & take.unsqueeze(1))
        picked = unit.gather(1, item.view(segments, 1, 1).expand(-1, 1, unit.shape[2]))
        similarity = torch.bmm(unit, picked.transpose(1, 2)).squeeze(2)
        closest = similarity if step == 0 else torch.maximum(closest, similarity)
    return chosen


def select_tokens_per_segment(
    features: torch.Tensor,
    segment_ids: torch.Tensor,
    keep_ratio: float | None = None,
    keep_per_segment: int | None = None,
    quality: torch.Tensor | None = None,
    method: str = "dpp",
    *,
    eps: float = 1e-6,
    backend: str = "auto",
) -> torch.Tensor:
    """Prune tokens segment by segment (e.g. per video frame); all segments in one batched call.

    Args:
        features: ``(n, d)`` token features of one sequence.
        segment_ids: ``(n,)`` integer: the segment (frame) of each token; ``-1`` (any negative
            id) marks tokens that are always kept (e.g. text). Ids need not be contiguous:
            memory scales with the number of segments present, not with the largest id.
        keep_ratio / keep_per_segment: exactly one. A segment of ``c`` tokens keeps
            ``ceil(keep_ratio * c)`` or ``min(keep_per_segment, c)`` (more than ``c`` is clamped).
            ``keep_ratio`` is a number or a 0-dim tensor (read once: a host sync on a device);
            a float32/float16/bfloat16 tensor stands for the simplest fraction its dtype rounds
            to its value (``torch.tensor(0.1)`` is 0.1, not 0.10000000149: 1 token of 10).
        quality: ``(n,)`` relevance of each token (CDPruner's conditional kernel); optional
            for ``"dpp"`` and ``"greedy_cosine"``, required for ``"topk"``. A token whose
            quality is NaN is never selected; it is kept only when its segment's quota cannot
            be met otherwise. An infinite quality counts as the dtype's largest magnitude.
        method: ``"dpp"``: greedy DPP MAP (:func:`torchdoctor.ops.dpp.dpp_greedy`'s algorithm) on the
            kernel ``diag(q) S diag(q)``, ``S`` the cosine similarities of the segment's
            L2-normalized tokens, built for all segments with one batched matmul of the raw
            features (not rescaled first, to keep the op one pass over them: the cosines, and
            so the selection, are exact only while squared feature entries stay in the
            dtype's range, about ``1e-19 .. 1e19`` in float32, the dtype float16/bfloat16
            features are computed in; tokens of ``1e-25`` read as zero tokens, so rescale
            such features first);
            ``"greedy_cosine"``: max-min diversity weighted by quality (``O(k L d)``, no
            kernel); ``"topk"``: the highest-quality tokens. For ``"dpp"`` and
            ``"greedy_cosine"`` scores equal but for rounding (16 ulps) go to the lowest
            position, as in ``dpp_greedy``.
        eps: (finite, ``>= 0``, as in ``dpp_greedy``; else ValueError) the DPP stops early
            in a segment whose kernel is exhausted (rank ``< k``): when
            the best remaining gain is ``<= eps`` times the segment's largest ``q^2`` (its
            kernel's largest diagonal), so the selection does not depend on quality's scale
            (softmax scores of 1e-3 select as scores of 1) and float32 rounding (about 1e-7
            of it) never passes for a new direction; its remaining slots go to the unselected
            tokens of highest quality (then lowest position), so a segment always keeps
            exactly its quota.
        backend: ``"torch"``: tensor ops only, on any device (the accelerator path).
            ``"numpy"`` / ``"numba"`` (``method="dpp"`` on float32/float64 CPU tensors): the
            segment bookkeeping and the fill run on NumPy views of the same memory, where an op
            costs microseconds instead of torch's launch overhead, and the greedy steps run as
            NumPy calls or compiled by numba (optional: ``pip install "torchdoctor[fast]"``);
            the similarity matmul stays a torch ``bmm``. ``"auto"`` (default): numba, else
            numpy, where they apply; torch otherwise. All give the same selection.

    Returns:
        int64 ``(n_kept,)``: global positions of the kept tokens, in increasing order.

    Host syncs: with the torch backend one (the number of segments, the longest one and the
    total kept, read together), none per segment; the host backends run on CPU memory, where
    reading a value is no synchronization.

    Example:
        >>> import torch
        >>> features = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> quality = torch.arange(8.0)
        >>> select_tokens_per_segment(features, ids, 0.5, quality=quality, method="topk").tolist()
        [2, 3, 6, 7]
    """
    keep_ratio, keep_per_segment = _check_arguments(
        features, segment_ids, keep_ratio, keep_per_segment, quality, method
    )
    eps = require_eps(eps, "eps")
    segment_ids = widen_integer(segment_ids)  # (uint32 ids: torch compares none of them)
    features = features.detach()  # the result is a set of positions: no autograd
    quality = None if quality is None else quality.detach()
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend in ("numpy", "numba") and method != "dpp":
        raise ValueError(
            f"backend={backend!r} runs the DPP greedy (method='dpp'), got method={method!r}; "
            "use backend='auto'"
        )
    engine = host_engine(backend, features) if method == "dpp" else "torch"
    if features.dtype in (torch.float16, torch.bfloat16):  # computed in float32 (see method)
        features = features.float()
    if quality is not None and quality.dtype in (torch.float16, torch.bfloat16):
        quality = quality.float()  # (exact: the same values, so the same ranking)
    if engine != "torch":
        return select_dpp_host(
            features, segment_ids, keep_ratio, keep_per_segment, quality, eps, engine
        )
    n = features.shape[0]
    device = features.device
    compact, segments, length, total, start = _sizes(segment_ids, keep_ratio, keep_per_segment)
    always = segment_ids < 0
    positions = torch.arange(n, device=device)
    if start >= 0:  # frames stored back to back: views, no gather

        def take(values: torch.Tensor) -> torch.Tensor:
            return values.narrow(0, start, segments * length).view(
                segments, length, values.shape[1]
            )

        slots = positions.narrow(0, start, segments * length).view(segments, length)
        mask = torch.ones(segments, length, dtype=torch.bool, device=device)
    else:
        slots, mask = pad_segments(
            positions, compact, fill=0, num_segments=segments, max_len=length
        )

        def take(values: torch.Tensor) -> torch.Tensor:
            return values.index_select(0, slots.reshape(-1)).view(segments, length, values.shape[1])

    wanted = tokens_to_keep(mask.sum(-1), keep_ratio, keep_per_segment)  # (S,)
    if keep_ratio is not None:
        steps = min(math.ceil(keep_ratio * length * ROUNDING), length)
    else:
        steps = min(keep_per_segment, length)

    if quality is not None:
        q = take(quality.unsqueeze(1)).view(segments, length)
    else:
        q = torch.ones(segments, length, dtype=features.dtype, device=device)
    # A NaN quality makes a token unusable: never selected, last in the fill (quota still met).
    usable = mask & ~torch.isnan(q)
    q = torch.where(usable, q, 0)
    if q.is_floating_point():  # (+-inf: the dtype's largest magnitude, so the scaling below
        big = torch.finfo(q.dtype).max  # gives 1, not inf / inf = NaN; every backend agrees)
        q = q.clamp(-big, big)
    if method == "dpp" and quality is not None and q.numel():  # eps is relative to the segment's largest q^2
        top = q.abs().amax(1, keepdim=True)  # (a scale per segment keeps every ranking)
        q = q / torch.where(top > 0, top, 1)
    chosen = torch.zeros(segments, length, dtype=torch.bool, device=device)
    if method == "dpp" and steps > 0:
        # One gather of the image tokens and one batched matmul of raw dot products. The L2
        # normalization and the quality are a per-token scale s_i = q_i / |f_i| that the greedy
        # applies to the few kernel rows it reads, so the (S, L, L) kernels are never rescaled.
        gathered = take(features)
        gram = torch.bmm(gathered, gathered.transpose(1, 2))
        norms = gram.diagonal(dim1=1, dim2=2).sqrt()  # |f|, without another pass over f
        scale = q / norms.clamp(min=1e-12)
        # Cosine self-similarity is exactly 1 (0 for a zero token): start from q^2 exactly, so
        # that ties on the diagonal do not hinge on rounding.
        gains = torch.where(norms > 0, q * q, 0).masked_fill(~usable, -math.inf)
        picked, _ = greedy_steps(gram, True, scale, gains, wanted, steps, eps, backend="torch")
        spare = torch.zeros(segments, length + 1, dtype=torch.bool, device=device)
        spare.scatter_(1, torch.where(picked >= 0, picked, length), True)
        chosen = spare[:, :length]
    elif method == "greedy_cosine" and steps > 0:
        unit = F.normalize(take(features), dim=-1)  # image tokens only
        chosen = _greedy_cosine(unit, q, usable, wanted, steps)

    # Chosen tokens first, then the rest by quality (stable: lower position first), to quota.
    score = torch.where(chosen, math.inf, torch.where(usable, q, -math.inf))
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, positions[:length].expand(segments, -1))
    keep_slot = mask & (rank < wanted.unsqueeze(1))
    keep = torch.zeros(n + 1, dtype=torch.bool, device=device)
    keep.scatter_(0, torch.where(keep_slot, slots, n).reshape(-1), True)
    keep = keep[:n] | always
    return torch.sort((~keep).to(torch.uint8), stable=True).indices[:total]

"""The CPU engine of ``select_tokens_per_segment(method="dpp")``: host bookkeeping in NumPy.

On a CPU tensor every torch op costs 5-30 us of launch overhead, and sorting a few thousand
keys costs 250-550 us, while the same bookkeeping on NumPy views of the same memory costs
1-40 us (measured; BENCHMARKS.md). Reading CPU memory is no host-device synchronization, so
here the segment structure is found with NumPy, the only heavy step (the batched similarity
matmul) stays a torch ``bmm``, the greedy runs on the host arrays, compiled
(``ops._greedy_jit.select_from_gram``, with numba) or as NumPy calls, and the early-stop fill, which needs a sort, runs
only for the segments that stopped early: a branch on host data, free here, that the device
engine must avoid. The device engine in ``ops.tokens`` gives the same selection (tested).
"""

from __future__ import annotations

import numpy as np
import torch

from torchdoctor.ops._greedy_numpy import greedy_arrays
from torchdoctor.ops._host import cpu_array
from torchdoctor.ops.dpp import compiled_engine

#: ``keep_ratio * count`` is multiplied by this before its ceiling: a product a rounding above
#: an integer counts as that integer (a relative 1e-12, far above float64's 1e-16 and far below
#: any count's distance to the next integer down)
ROUNDING = 1.0 - 1e-12

__all__ = ["select_dpp_host", "tokens_to_keep"]


def tokens_to_keep(counts, keep_ratio: float | None, keep_per_segment: int | None):
    """Tokens kept per segment: ``ceil(keep_ratio * count)`` or ``min(keep_per_segment, count)``
    (the product taken down by a relative :data:`ROUNDING` first: ``0.3 * 10`` is
    ``3.0000000000000004``, 3 tokens, while any positive ratio keeps at least one).

    ``counts`` is an integer tensor or NumPy array; the result is of the same kind.

    Example:
        >>> import torch
        >>> from torchdoctor.ops.tokens import tokens_to_keep
        >>> tokens_to_keep(torch.tensor([196, 3, 0]), 0.25, None).tolist()
        [49, 1, 0]
    """
    if isinstance(counts, np.ndarray):
        if keep_ratio is not None:
            wanted = np.ceil(counts.astype(np.float64) * keep_ratio * ROUNDING).astype(np.int64)
        else:
            wanted = np.full_like(counts, keep_per_segment)
        return np.minimum(wanted, counts)
    if keep_ratio is not None:
        wanted = torch.ceil(counts.to(torch.float64) * keep_ratio * ROUNDING).long()
    else:
        wanted = torch.full_like(counts, keep_per_segment)
    return torch.minimum(wanted, counts)


def _segments(ids: np.ndarray):
    """Image positions grouped by segment: ``(positions in segment order, run starts, counts)``.

    Segments come in increasing id order and, within one, tokens in position order.
    """
    positions = np.flatnonzero(ids >= 0)
    image_ids = ids[positions]
    if image_ids.size > 1 and (image_ids[1:] < image_ids[:-1]).any():
        order = np.argsort(image_ids, kind="stable")
        positions, image_ids = positions[order], image_ids[order]
    change = np.empty(image_ids.size, dtype=bool)
    change[:1] = True
    np.not_equal(image_ids[1:], image_ids[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1:] = image_ids.size
    return positions, starts, ends - starts


def _select_numpy(gram, q, usable, wanted, eps, steps):
    """``_greedy_jit.select_from_gram`` as NumPy calls: the DPP choice of each segment."""
    with np.errstate(invalid="ignore", divide="ignore"):
        norms = np.sqrt(np.diagonal(gram, axis1=1, axis2=2))
        scale = q / np.maximum(norms, 1e-12)
    # Exact cosine self-similarity (see ops.tokens): the gains start at q^2 (0 for zero tokens).
    gains = np.where(norms > 0, q * q, 0).astype(gram.dtype, copy=False)
    gains[~usable] = -np.inf
    items, bests = greedy_arrays(gram, True, scale, gains, steps)  # (steps, S)
    allowed = np.arange(steps)[:, None] < wanted[None, :]
    ok = np.cumprod((bests > eps) & allowed, axis=0, dtype=np.int8).astype(bool)
    chosen = np.zeros(usable.shape, dtype=bool)
    step_of, segment_of = np.nonzero(ok)
    chosen[segment_of, items[step_of, segment_of]] = True
    return chosen


def select_dpp_host(
    features: torch.Tensor,
    segment_ids: torch.Tensor,
    keep_ratio: float | None,
    keep_per_segment: int | None,
    quality: torch.Tensor | None,
    eps: float,
    engine: str = "numpy",
) -> torch.Tensor:
    """Same contract as ``select_tokens_per_segment(..., method="dpp")`` on CPU tensors;
    ``engine`` ``"numba"`` (compiled) or ``"numpy"`` runs the kernel weights and the greedy."""
    ids = cpu_array(segment_ids).astype(np.int64, copy=False)
    keep = ids < 0  # text tokens: always kept
    positions, starts, counts = _segments(ids)
    if positions.size == 0:
        return torch.from_numpy(np.flatnonzero(keep))
    segments, length = counts.size, int(counts.max())
    wanted = tokens_to_keep(counts, keep_ratio, keep_per_segment)
    steps = int(wanted.max())
    if steps == 0:
        return torch.from_numpy(np.flatnonzero(keep))

    # (S, L) slots: the position of each segment's j-th token; padding points at a real token
    # and is masked out. Frames stored back to back and of equal length are a plain view.
    # (in position order too: interleaved frames of equal length span a contiguous range)
    back_to_back = counts.min() == length and bool((np.diff(positions) == 1).all())
    if back_to_back:
        slots = positions.reshape(segments, length)
        mask = np.ones((segments, length), dtype=bool)
        start = int(positions[0])
        gathered = features.narrow(0, start, segments * length).view(segments, length, -1)
    else:
        row = np.repeat(np.arange(segments), counts)
        column = np.arange(positions.size) - np.repeat(starts, counts)
        slots = np.full((segments, length), positions[0], dtype=np.int64)
        slots[row, column] = positions
        mask = np.zeros((segments, length), dtype=bool)
        mask[row, column] = True
        index = torch.from_numpy(slots.reshape(-1))
        gathered = features.index_select(0, index).view(segments, length, -1)

    gram = cpu_array(torch.bmm(gathered, gathered.transpose(1, 2)))  # the compute-bound part
    if quality is None:
        q = np.ones((segments, length), dtype=gram.dtype)
    else:  # in quality's own dtype (float32/float64), as ops.tokens ranks it: float64 scores
        q = cpu_array(quality)[slots]  # rounded to float32 features would tie or overflow
    usable = mask & ~np.isnan(q)  # a NaN quality: never selected, last in the fill
    q = np.where(usable, q, 0)
    big = np.finfo(q.dtype).max  # (+-inf: the largest magnitude, as ops.tokens does)
    q = np.clip(q, -big, big)
    if quality is not None and q.size:  # eps is relative to the segment's largest q^2 (as ops.tokens)
        top = np.abs(q).max(axis=1, keepdims=True)
        q = q / np.where(top > 0, top, 1).astype(q.dtype, copy=False)
    weights = q.astype(gram.dtype, copy=False)  # the greedy runs in the features' dtype
    compiled = compiled_engine() if engine == "numba" else None
    if compiled is not None:
        chosen = compiled.select_from_gram(gram, weights, usable, wanted, eps)
    else:
        chosen = _select_numpy(gram, weights, usable, wanted, eps, steps)
    missing = wanted - chosen.sum(1)
    short = np.flatnonzero(missing > 0)
    if short.size:  # a kernel exhausted early: fill by quality, then by position
        candidates = mask[short] & ~chosen[short]
        # Usable candidates by quality, then NaN-quality ones (-inf), then the rest (NaN, which
        # sorts last): chosen tokens and padding must not take a rank before any candidate.
        score = np.where(candidates, np.where(usable[short], q[short], -np.inf), np.nan)
        order = np.argsort(-score, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(length)[None, :], axis=1)
        chosen[short] |= candidates & (rank < missing[short][:, None])
    keep[slots[chosen]] = True
    return torch.from_numpy(np.flatnonzero(keep))

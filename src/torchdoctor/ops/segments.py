"""Segment utilities: group tokens by segment id and pad segments into one dense batch.

Seed 003 ran ``torch.where(segment_mask == seg_id)`` once per segment, one host sync each
(64 frames, 64 syncs). Here one stable sort groups every segment at once; the only host sync
left is reading the padded sizes, and none happens when ``num_segments`` and ``max_len`` are
given.

Conventions shared by both functions:

- ``segment_ids`` has shape ``(..., n)``; leading dims are independent rows (batched).
- Ids ``0 <= id < num_segments`` name a segment; negative ids (e.g. ``-1`` for text tokens in
  seed 003) belong to no segment and are left out.
- Within a segment, tokens keep their original order (stable).

Example:
    >>> import torch
    >>> ids = torch.tensor([1, 0, 1, -1, 0, 1])
    >>> order, counts, offsets = group_by_segment(ids)
    >>> order.tolist(), counts.tolist(), offsets.tolist()
    ([1, 4, 0, 2, 5, 3], [2, 3], [0, 2])
"""

from __future__ import annotations

import math
import numbers

import torch

from torchdoctor.ops._validation import (
    require_count,
    require_gatherable,
    require_integer,
    require_rank,
    require_same_device,
    require_size,
    require_tensor,
    widen_integer,
)

__all__ = ["group_by_segment", "pad_segments"]


def _check_ids(segment_ids: torch.Tensor) -> torch.Tensor:
    """The checked ids (uint16/32/64 widened to int64: torch compares none of them)."""
    require_integer(segment_ids, "segment_ids")
    require_rank(segment_ids, "segment_ids", 1, layout="(..., n)")
    return widen_integer(segment_ids)


def _check_count(value: int | None, name: str) -> int | None:
    """``value`` as a Python int (NumPy integers accepted), or ``None``."""
    if value is None:
        return None
    value = require_count(value, name, what="a non-negative int or None")
    if value >= 2**62:  # (torch would fail converting it, or allocating its dimension)
        raise ValueError(f"{name} must be below 2**62 (a tensor dimension), got {value}")
    return value


def _require_values(segment_ids: torch.Tensor, sizes: str, op: str) -> None:
    """Raise ValueError for meta ids when the sizes must be read from their values."""
    if segment_ids.device.type == "meta":
        raise ValueError(
            f"{op}: segment_ids is a meta tensor (shapes only, no values), so {sizes} cannot "
            f"be read from it; pass {sizes} explicitly (or ids on a real device)"
        )


def _check_implied_segments(num_segments: int, segment_ids: torch.Tensor, op: str) -> None:
    """Raise ValueError when ``max(id) + 1`` segments (the default ``num_segments``) is absurd
    for the input: more than ``max(16 * segment_ids.numel(), 2**20)``. Sparse ids such as
    timestamps would otherwise allocate terabytes. Plain Python on the size already read."""
    bound = max(16 * segment_ids.numel(), 2**20)
    if num_segments > bound:
        raise ValueError(
            f"{op}: the largest segment id is {num_segments - 1}, so the default num_segments "
            f"= max(id) + 1 = {num_segments} is more than max(16 * number of ids, 2**20) = "
            f"{bound} for {segment_ids.numel()} ids; pass num_segments explicitly, or compact "
            "the ids to 0..S-1 first (e.g. torch.unique(ids, return_inverse=True) or "
            "remap_labels on the non-negative ids, keeping ignored ids negative)"
        )


def _check_fill(fill: object, dtype: torch.dtype) -> object:
    """Raise ValueError for a number that ``dtype`` cannot hold (``-1`` on uint8 would be 255,
    ``0.5`` on int64 0, ``1e5`` on float16 inf); return the fill as a Python number when it is
    a NumPy scalar or a 0-dim CPU tensor (checked the same way). A device tensor is left to
    torch (reading it would wait for the device)."""
    if not isinstance(fill, (numbers.Number, torch.Tensor)):
        raise TypeError(f"fill must be a number, got {fill!r} ({type(fill).__name__})")
    if isinstance(fill, torch.Tensor):
        if fill.ndim != 0:
            raise ValueError(f"pad_segments: fill must be one number, got a tensor of shape "
                             f"{tuple(fill.shape)}; pass a Python number or a 0-dim tensor")
        if fill.device.type != "cpu":
            return fill
        fill = fill.item()
    elif not isinstance(fill, (bool, int, float, complex)) and hasattr(fill, "item"):
        fill = fill.item()  # (a NumPy scalar: np.int64(-1) on uint8 is checked too)
    if isinstance(fill, numbers.Complex) and not isinstance(fill, numbers.Real):
        if not dtype.is_complex:
            raise ValueError(
                f"pad_segments: fill={fill!r} is complex but values' dtype {dtype} is real; "
                "pass a real fill, or complex values"
            )
        return fill
    if not isinstance(fill, (bool, int, float)) or dtype.is_complex:
        return fill
    if dtype == torch.bool:
        held, kind = fill in (0, 1), "0/1 or True/False"
    elif dtype.is_floating_point:  # plain Python arithmetic: no tensor read, no sync
        top = torch.finfo(dtype).max
        try:
            held = not math.isfinite(fill) or abs(float(fill)) <= top
        except OverflowError:  # an int beyond float64
            held = False
        kind = f"NaN, +-inf or magnitudes up to {top:.6g}"
    else:
        info = torch.iinfo(dtype)
        whole = isinstance(fill, int) or (math.isfinite(fill) and fill == int(fill))
        held, kind = whole and info.min <= fill <= info.max, f"integers {info.min}..{info.max}"
    if not held:
        raise ValueError(
            f"pad_segments: fill={fill!r} cannot be held by values' dtype {dtype} ({kind}); "
            "pick a fill the dtype holds, or cast values first (e.g. values.long())"
        )
    return fill


def _sort_keys(segment_ids: torch.Tensor) -> torch.Tensor:
    """Ids as sort keys, with negative (ignored) ids moved after every real segment."""
    big = torch.iinfo(torch.long).max
    ids = segment_ids.long()
    return torch.where(ids < 0, torch.full_like(ids, big), ids)


def group_by_segment(
    segment_ids: torch.Tensor, num_segments: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group positions by segment id with one stable sort.

    Args:
        segment_ids: integer tensor ``(..., n)``; negative ids are ignored.
        num_segments: number of segments ``S``. When ``None`` it is ``max(id) + 1`` over all
            rows, which costs one host sync; pass it on a hot path for zero syncs. That default
            raises ValueError when it exceeds ``max(16 * segment_ids.numel(), 2**20)`` (sparse
            ids such as timestamps): pass ``num_segments`` or compact the ids first.

    Returns:
        ``order`` ``(..., n)`` long: positions sorted by segment (stable), ignored ones last,
        so ``order[..., offsets[s]:offsets[s] + counts[s]]`` are the positions of segment ``s``;
        ``counts`` ``(..., S)`` long: tokens per segment (ids ``>= S`` are not counted);
        ``offsets`` ``(..., S)`` long: where each segment starts in ``order``.

    Example:
        >>> ids = torch.tensor([[0, 2, 0], [1, 1, 2]])
        >>> order, counts, offsets = group_by_segment(ids, num_segments=3)
        >>> counts.tolist()
        [[2, 0, 1], [0, 2, 1]]
    """
    segment_ids = _check_ids(segment_ids)
    num_segments = _check_count(num_segments, "num_segments")
    if num_segments is None:
        _require_values(segment_ids, "num_segments", "group_by_segment")
        if segment_ids.numel() == 0:
            num_segments = 0
        else:
            # In int64: clamp(min=-1) on uint8 ids would wrap -1 to 255 (256 segments).
            num_segments = int(segment_ids.max().long().clamp(min=-1).item()) + 1  # the one sync
            _check_implied_segments(num_segments, segment_ids, "group_by_segment")
    keys = _sort_keys(segment_ids)
    order = torch.sort(keys, dim=-1, stable=True).indices
    # Ignored and out-of-range ids go to an extra bin that is dropped afterwards.
    bins = torch.where(keys < num_segments, keys, torch.full_like(keys, num_segments))
    counts = torch.zeros(
        (*segment_ids.shape[:-1], num_segments + 1), dtype=torch.long, device=segment_ids.device
    )
    counts.scatter_add_(-1, bins, torch.ones_like(bins))
    counts = counts[..., :num_segments]
    offsets = torch.cumsum(counts, dim=-1) - counts
    return order, counts, offsets


def pad_segments(
    values: torch.Tensor,
    segment_ids: torch.Tensor,
    fill: float | int | bool = 0,
    num_segments: int | None = None,
    max_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack the tokens of each segment into a dense ``(..., S, max_len, *features)`` tensor.

    Args:
        values: ``(..., n, *features)``: one entry per token; its leading ``(..., n)`` dims
            equal ``segment_ids.shape``.
        segment_ids: integer ``(..., n)``; negative ids are left out.
        fill: value of padding slots; one that ``values``' dtype cannot hold (``-1`` for
            uint8, ``0.5`` for an integer dtype, ``1e5`` for float16) is a ValueError.
        num_segments: ``S``; default ``max(id) + 1`` over all rows, a ValueError when that
            exceeds ``max(16 * segment_ids.numel(), 2**20)`` (as in :func:`group_by_segment`).
        max_len: padded length; default the largest segment (of ids ``< num_segments``: the
            tokens of larger ids are dropped and do not count). Tokens of a segment beyond
            ``max_len`` are dropped. When either size is missing both are read with one host
            sync; with both given there is none.

    Returns:
        ``(padded, mask)``: ``padded`` has ``values``' dtype and device, tokens of a segment in
        their original order; ``mask`` ``(..., S, max_len)`` is True where a slot holds a token.
        Differentiable with respect to ``values``.

    Example:
        >>> ids = torch.tensor([1, 0, 1, -1, 0, 1])
        >>> padded, mask = pad_segments(torch.arange(6.0), ids, fill=-1)
        >>> padded.tolist()
        [[1.0, 4.0, -1.0], [0.0, 2.0, 5.0]]
    """
    require_tensor(values, "values")
    require_gatherable(values, "values")
    segment_ids = _check_ids(segment_ids)
    num_segments = _check_count(num_segments, "num_segments")
    max_len = _check_count(max_len, "max_len")
    require_same_device(values=values, segment_ids=segment_ids)
    fill = _check_fill(fill, values.dtype)  # type: ignore[assignment]
    if values.dtype.is_floating_point and isinstance(fill, int) and not isinstance(fill, bool):
        fill = float(fill)  # (torch.full converts an int beyond int64 to no float dtype)
    lead = segment_ids.shape
    if values.ndim < len(lead) or values.shape[: len(lead)] != lead:
        raise ValueError(
            f"values must have shape segment_ids.shape + features = {tuple(lead)} + (...), "
            f"got values shape {tuple(values.shape)}; give one value per token"
        )
    for dim in range(len(lead)):
        require_size(values, "values", dim, lead[dim], "the matching dimension of segment_ids")
    features = values.shape[len(lead) :]
    n = lead[-1]
    keys = _sort_keys(segment_ids)
    sorted_keys, order = torch.sort(keys, dim=-1, stable=True)

    if num_segments is None or max_len is None:
        _require_values(segment_ids, "num_segments and max_len", "pad_segments")
        if segment_ids.numel() == 0:
            sizes = [0, 0]
        else:
            # Rank of each sorted token in its segment: position minus the start of its run.
            position = torch.arange(n, device=segment_ids.device).expand_as(sorted_keys)
            run_starts = torch.ones_like(sorted_keys, dtype=torch.bool)
            if n > 1:
                run_starts[..., 1:] = sorted_keys[..., 1:] != sorted_keys[..., :-1]
            run_start = torch.where(run_starts, position, 0).cummax(dim=-1).values
            rank = position - run_start
            # From the ids, not the keys: the largest int64 id shares the key of ignored ids.
            top_id = segment_ids.max().long().clamp(min=-1)
            real = segment_ids.long().gather(-1, order) >= 0
            if num_segments is not None:  # ids >= num_segments are no segment: not counted
                real = sorted_keys < num_segments
            top_rank = torch.where(real, rank, torch.full_like(rank, -1)).max()
            # + 1 in Python: max(id) + 1 overflows int64 for the largest id
            sizes = [v + 1 for v in torch.stack([top_id, top_rank]).tolist()]  # the one sync
        if num_segments is None:
            _check_implied_segments(sizes[0], segment_ids, "pad_segments")
            num_segments = sizes[0]
        max_len = sizes[1] if max_len is None else max_len

    rows = math.prod(lead[:-1])
    slots = rows * num_segments * max_len
    if slots >= 2**62:
        raise ValueError(f"pad_segments: {rows} rows x num_segments={num_segments} x max_len="
                         f"{max_len} slots is beyond any tensor; pass smaller sizes")
    out_shape = (*lead[:-1], num_segments, max_len)
    # Gather, not scatter: each slot reads the sorted position of its token (start of its
    # segment + its rank there), so the values are read once into the output, which padding
    # slots then take ``fill`` in place. A full(fill) + index_copy scatter made four passes over
    # the (slots, *features) data and ran 2x slower than seed 003's per-segment loop at d = 256.
    device = segment_ids.device
    if slots == 0 or rows * n == 0:  # (no counts: num_segments may be huge with max_len 0)
        padded = torch.full((slots, *features), fill, dtype=values.dtype, device=values.device)
        mask = torch.zeros(out_shape, dtype=torch.bool, device=device)
        return padded.reshape(*out_shape, *features), mask
    bins = torch.where(sorted_keys < num_segments, sorted_keys, num_segments)
    counts = torch.zeros((*lead[:-1], num_segments + 1), dtype=torch.long, device=device)
    counts = counts.scatter_add_(-1, bins, torch.ones_like(bins))[..., :num_segments]
    starts = torch.cumsum(counts, dim=-1) - counts  # keys below s sort before segment s
    slot_rank = torch.arange(max_len, device=device)
    mask = slot_rank < counts.unsqueeze(-1)  # (..., S, max_len)
    sorted_at = torch.where(mask, starts.unsqueeze(-1) + slot_rank, 0)
    position = order.gather(-1, sorted_at.reshape(*lead[:-1], slots // rows))
    row = torch.arange(rows, device=device).view(*lead[:-1], 1)
    source = (position + row * n).reshape(-1)
    padded = values.reshape(rows * n, *features).index_select(0, source)
    padded = padded.masked_fill_(~mask.reshape(slots, *(1,) * len(features)), fill)
    return padded.reshape(*out_shape, *features), mask

"""Seed 003's per-segment loop: one ``torch.where`` (one host sync) per segment.

Example:
    >>> import torch
    >>> ids = torch.tensor([1, 0, 1, -1, 0, 1])
    >>> padded, mask = pad_segments_reference(torch.arange(6.0), ids, fill=-1)
    >>> padded.tolist()
    [[1.0, 4.0, -1.0], [0.0, 2.0, 5.0]]
"""

from __future__ import annotations

import torch

__all__ = ["segment_indices_reference", "pad_segments_reference"]


def segment_indices_reference(segment_ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """Positions of each segment of a 1-D id tensor, one ``torch.where`` per segment (seed 003).

    Example:
        >>> segment_indices_reference(torch.tensor([1, 0, 1]))[1].tolist()
        [0, 2]
    """
    out: dict[int, torch.Tensor] = {}
    for seg_id in torch.unique(segment_ids[segment_ids >= 0], sorted=True):
        out[int(seg_id)] = torch.where(segment_ids == seg_id)[0]
    return out


def pad_segments_reference(
    values: torch.Tensor,
    segment_ids: torch.Tensor,
    fill: float | int | bool = 0,
    num_segments: int | None = None,
    max_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop version of ``torchdoctor.ops.pad_segments`` (rows, then segments, in Python).

    Example:
        >>> p, m = pad_segments_reference(torch.tensor([5.0, 6.0]), torch.tensor([0, 0]))
        >>> p.tolist(), m.tolist()
        ([[5.0, 6.0]], [[True, True]])
    """
    lead = segment_ids.shape
    features = values.shape[len(lead) :]
    rows = 1
    for size in lead[:-1]:
        rows *= size
    ids_rows = segment_ids.reshape(rows, lead[-1])
    value_rows = values.reshape(rows, lead[-1], *features)
    per_row = [segment_indices_reference(ids) for ids in ids_rows]
    if num_segments is None:
        num_segments = max((max(r) + 1 for r in per_row if r), default=0)
    if max_len is None:  # the largest kept segment: ids >= num_segments are dropped
        kept = (ix for r in per_row for seg, ix in r.items() if seg < num_segments)
        max_len = max((len(ix) for ix in kept), default=0)
    padded = torch.full(
        (len(per_row), num_segments, max_len, *features),
        fill,
        dtype=values.dtype,
        device=values.device,
    )
    mask = torch.zeros(len(per_row), num_segments, max_len, dtype=torch.bool, device=values.device)
    for b, row in enumerate(per_row):
        for seg, positions in row.items():
            if seg >= num_segments:
                continue
            positions = positions[:max_len]
            padded[b, seg, : len(positions)] = value_rows[b, positions]
            mask[b, seg, : len(positions)] = True
    return (
        padded.reshape(*lead[:-1], num_segments, max_len, *features),
        mask.reshape(*lead[:-1], num_segments, max_len).to(values.device),
    )

"""The dense "before" of :func:`torchdoctor.ops.edge_softmax`: pytorch/examples GAT's masked
softmax over every pair of nodes.

Example:
    >>> import torch
    >>> adj = torch.tensor([[1, 1], [0, 1]])
    >>> masked_softmax_before(torch.zeros(2, 2), adj).tolist()
    [[0.5, 0.5], [0.0, 1.0]]
"""

from __future__ import annotations

import torch


def masked_softmax_before(scores: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of dense ``(..., N, N)`` scores, the pairs that are no
    edge (``adjacency <= 0``) set to -9e16 first, as pytorch/examples' GAT layer does.

    Example:
        >>> import torch
        >>> masked_softmax_before(torch.tensor([[0.0, 5.0]]), torch.tensor([[1, 0]])).tolist()
        [[1.0, 0.0]]
    """
    connectivity_mask = -9e16 * torch.ones_like(scores)
    return torch.softmax(torch.where(adjacency > 0, scores, connectivity_mask), dim=-1)

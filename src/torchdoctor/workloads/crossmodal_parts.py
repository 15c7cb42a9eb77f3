"""Seed 004's pieces: the re-ID model and the host-side pairing of a batch for SDM.

Example:
    >>> import numpy as np
    >>> sdm_pairs(np.array([3, 3]), np.array([True, False]))
    ([1], [0], 0)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MODALITIES = ("rgb", "ir", "cp", "sketch", "text")


class ReIDModel(nn.Module):
    """``backbone`` (modality embedding + MLP) -> normalized embedding; ``head`` classifies.

    Example:
        >>> model = ReIDModel(input_dim=6, hidden=8, embedding=4, identities=3)
        >>> feats, logits = model(torch.randn(5, 6), torch.zeros(5, dtype=torch.long))
        >>> feats.shape, logits.shape
        (torch.Size([5, 4]), torch.Size([5, 3]))
    """

    def __init__(self, input_dim: int, hidden: int, embedding: int, identities: int):
        super().__init__()
        self.backbone = nn.ModuleDict(
            {
                "modality": nn.Embedding(len(MODALITIES), input_dim),
                "mlp": nn.Sequential(
                    nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, embedding)
                ),
            }
        )
        self.head = nn.Linear(embedding, identities)

    def forward(self, x: torch.Tensor, modality: torch.Tensor):
        feats = self.backbone["mlp"](x + self.backbone["modality"](modality))
        return feats, self.head(feats)


def sdm_pairs(labels: np.ndarray, is_rgb: np.ndarray) -> tuple[list[int], list[int], int]:
    """Host-side pairing of a batch: each non-RGB row with an RGB row of its identity.

    Returns (query rows, gallery rows, rows without a positive). Computed from the sampler's
    host-side indices, so it costs no device sync.

    Example:
        >>> sdm_pairs(np.array([0, 0, 0, 1, 1]), np.array([True, False, False, False, False]))
        ([1, 2], [0, 0], 2)
    """
    queries, gallery, missing = [], [], 0
    for identity in dict.fromkeys(labels.tolist()):
        rows = np.flatnonzero(labels == identity)
        rgb, other = rows[is_rgb[rows]], rows[~is_rgb[rows]]
        if len(rgb) == 0 or len(other) == 0:
            missing += len(rows)
            continue
        for j, row in enumerate(other):
            queries.append(int(row))
            gallery.append(int(rgb[j % len(rgb)]))
    return queries, gallery, missing

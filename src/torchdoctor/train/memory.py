"""Cross-batch memory: a device ring buffer of recent features as an extra loss gallery.

Seed 004 keeps the RGB features and labels of the last 4-8 steps, so that non-RGB rows of the
current batch find a positive even when the batch itself has none. Unlike the official XBM
code, which marks empty slots with label 0 (and so drops real samples of class 0 before the
buffer is full), validity here is a host-side count: correct before the buffer is full and
for any label value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class MemoryGallery(NamedTuple):
    """The contents of a :class:`CrossBatchMemory`: ``features (M, D)``, ``labels (M,)``,
    ``modalities (M,)`` (integer codes) and ``mask (M,)`` (bool, which rows to use).

    Example:
        >>> import torch
        >>> memory = CrossBatchMemory(size=3, dim=2)
        >>> memory.enqueue(torch.ones(2, 2), torch.tensor([4, 5]), modalities=1)
        >>> features, labels, modalities, mask = memory.gallery(1, compact=False)
        >>> labels.tolist(), mask.tolist()
        ([4, 5], [True, True])
    """

    features: torch.Tensor
    labels: torch.Tensor
    modalities: torch.Tensor
    mask: torch.Tensor | None


class CrossBatchMemory:
    """Ring buffer of the last ``size`` detached feature rows with their labels and modalities.

    :meth:`enqueue` writes rows with an ``index_copy_`` at host-known positions: no host sync.
    :meth:`gallery` returns the filled rows (oldest first is not guaranteed). Modalities are
    stored as integer codes; pass ``modality_names`` to use names (``"rgb"``) instead.

    Example:
        >>> import torch
        >>> memory = CrossBatchMemory(size=4, dim=2)
        >>> memory.enqueue(torch.ones(3, 2), torch.tensor([0, 0, 1]))
        >>> memory.enqueue(torch.zeros(2, 2), torch.tensor([5, 6]))
        >>> memory.count, sorted(memory.gallery().labels.tolist())
        (4, [0, 1, 5, 6])
    """

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        modality_names: Sequence[str] | None = None,
    ) -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be >= 1, got size={size}, dim={dim}")
        self.size = size
        self.dim = dim
        self.modality_names = list(modality_names) if modality_names is not None else None
        self.features = torch.zeros(size, dim, dtype=dtype, device=device)
        self.labels = torch.zeros(size, dtype=torch.long, device=device)
        self.modalities = torch.zeros(size, dtype=torch.long, device=device)
        self.count = 0  # filled rows (host int: no sync to know it)
        self.position = 0  # next row to write
        self.enqueued = 0  # rows ever written

    def _code(self, modality: str | int) -> int:
        if isinstance(modality, str):
            if self.modality_names is None or modality not in self.modality_names:
                raise ValueError(
                    f"unknown modality {modality!r}; pass modality_names=[...] containing it to "
                    "CrossBatchMemory, or use integer codes"
                )
            return self.modality_names.index(modality)
        return int(modality)

    @torch.no_grad()
    def enqueue(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        modalities: torch.Tensor | str | int = 0,
    ) -> None:
        """Add rows (detached); the oldest rows are overwritten once the buffer is full."""
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"features must be (N, {self.dim}); got {tuple(features.shape)}: flatten or "
                "project them to the memory's dim first"
            )
        n = features.shape[0]
        if labels.shape != (n,):
            raise ValueError(
                f"labels must be ({n},), one per feature row; got {tuple(labels.shape)}"
            )
        if n == 0:
            return
        if isinstance(modalities, torch.Tensor):
            if modalities.shape != (n,):
                raise ValueError(
                    f"modalities must be ({n},) codes or one name/code; got {tuple(modalities.shape)}"
                )
            codes = modalities.to(device=self.modalities.device, dtype=torch.long)
        else:
            codes = torch.full(
                (n,), self._code(modalities), dtype=torch.long, device=self.modalities.device
            )
        if n > self.size:  # only the newest `size` rows survive
            features, labels, codes = (
                features[-self.size :],
                labels[-self.size :],
                codes[-self.size :],
            )
            self.position = (self.position + n - self.size) % self.size
            n = self.size
        rows = (torch.arange(n, device=self.features.device) + self.position) % self.size
        self.features.index_copy_(0, rows, features.detach().to(self.features.dtype))
        self.labels.index_copy_(
            0, rows, labels.detach().to(device=self.labels.device, dtype=torch.long)
        )
        self.modalities.index_copy_(0, rows, codes)
        self.position = (self.position + n) % self.size
        self.count = min(self.count + n, self.size)
        self.enqueued += n

    def gallery(self, modality: str | int | None = None, *, compact: bool = True) -> MemoryGallery:
        """The filled rows, optionally of one modality.

        Without ``modality`` this never syncs (a slice of host-known length). With a modality,
        ``compact=True`` selects the rows with a boolean mask, which has a data-dependent size
        (a host sync on CUDA); ``compact=False`` keeps all filled rows and returns the ``mask``
        instead, for ``sdm_loss(..., gallery_mask=mask)``: no sync.
        """
        features = self.features[: self.count]
        labels = self.labels[: self.count]
        modalities = self.modalities[: self.count]
        if modality is None:
            return MemoryGallery(features, labels, modalities, None)
        mask = modalities == self._code(modality)
        if not compact:
            return MemoryGallery(features, labels, modalities, mask)
        return MemoryGallery(features[mask], labels[mask], modalities[mask], None)

    def reset(self) -> None:
        """Empty the memory (e.g. when features drift after an LR change)."""
        self.count = 0
        self.position = 0

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (
            f"CrossBatchMemory(size={self.size}, dim={self.dim}, filled={self.count}, "
            f"device={self.features.device})"
        )

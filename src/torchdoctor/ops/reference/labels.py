"""Seed 002's label remapping, "before" (host round trip + dict) and "after" (loop on device).

Example:
    >>> import torch
    >>> remap_labels_after(torch.tensor([40, 7, 40])).tolist()
    [1, 0, 1]
"""

from __future__ import annotations

import torch

__all__ = ["remap_labels_before", "remap_labels_after"]


def remap_labels_before(labels: torch.Tensor) -> torch.Tensor:
    """Seed 002 "before": copy to the host, sort a Python set, map with a dict, copy back.

    Example:
        >>> remap_labels_before(torch.tensor([3, 1])).tolist()
        [1, 0]
    """
    y_cpu = labels.detach().to("cpu").numpy().astype(int)
    unique_labels = sorted(set(y_cpu.reshape(-1).tolist()))
    label_map = {lab: i for i, lab in enumerate(unique_labels)}
    flat = [label_map[int(v)] for v in y_cpu.reshape(-1)]
    return torch.tensor(flat, dtype=torch.long, device=labels.device).reshape(labels.shape)


def remap_labels_after(labels: torch.Tensor) -> torch.Tensor:
    """Seed 002 "after": ``torch.unique`` on the device, then one masked write per label.

    Example:
        >>> remap_labels_after(torch.tensor([3, 1])).tolist()
        [1, 0]
    """
    unique_labels = torch.unique(labels)
    y_remapped = torch.zeros_like(labels, dtype=torch.long)
    for idx, label in enumerate(unique_labels):
        y_remapped[labels == label] = idx
    return y_remapped

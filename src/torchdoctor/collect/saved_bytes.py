"""The recorder's ``saved_tensors_hooks``: the activation bytes each module's forward saves.

A pack hook that returns the tensor itself (no copy) counts the storage bytes saved for
backward under the innermost module running, each storage once per step; parameters and their
views are not activations and are skipped. Mixed into :class:`~torchdoctor.collect.recorder.Recorder`
(which holds ``count_memory``, ``frames``, ``seen_storages`` and ``act``).

Example:
    >>> import torch
    >>> class Counter(SavedBytes):
    ...     count_memory, frames = True, []
    >>> Counter().pack(torch.ones(2)).tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from torchdoctor.collect.compiled import compiling


class SavedBytes:
    """``pack``/``unpack`` for ``torch.autograd.graph.saved_tensors_hooks``."""

    count_memory: bool
    frames: list[Any]
    seen_storages: set[int]
    act: Any

    def pack(self, tensor: Tensor) -> Tensor:
        if compiling():
            return tensor
        try:
            self._count_saved(tensor)
        except Exception:  # never break the user's forward over a size we cannot read
            pass
        return tensor

    def _count_saved(self, tensor: Tensor) -> None:
        if self.count_memory and self.frames:
            if not (tensor.is_leaf and tensor.requires_grad):
                base = tensor._base
                if base is None or not (base.is_leaf and base.requires_grad):
                    storage = tensor.untyped_storage()
                    pointer = storage.data_ptr()
                    if pointer not in self.seen_storages:
                        self.seen_storages.add(pointer)
                        self.act[self.frames[-1].node] += storage.nbytes()

    @staticmethod
    def unpack(tensor: Tensor) -> Tensor:
        return tensor

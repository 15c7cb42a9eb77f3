"""Helpers shared by the ops1 tests: a sync counter that also sees host reads dispatch misses."""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

from torchdoctor.testing import count_host_syncs

# Host reads that never reach aten (item/int/float/bool do, as _local_scalar_dense).
_UNSEEN_READS = {"tolist", "cpu", "numpy"}


class _HostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in _UNSEEN_READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


class SyncCount:
    def __init__(self) -> None:
        self.aten = count_host_syncs()
        self.reads = _HostReads()

    @property
    def total(self) -> int:
        return self.aten.count + self.reads.count


@contextlib.contextmanager
def count_syncs():
    """Count aten syncs plus .tolist()/.cpu()/.numpy() calls inside the block."""
    counter = SyncCount()
    with counter.reads, counter.aten:
        yield counter


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)

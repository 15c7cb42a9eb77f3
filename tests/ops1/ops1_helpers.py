"""Helpers shared by the ops1 tests: the sync counter, as they name it."""

from __future__ import annotations

import contextlib

import torch

from torchdoctor.testing import count_host_syncs


class SyncCount(count_host_syncs):
    """count_host_syncs (aten syncs and whole-tensor host reads) under the name these tests use."""

    @property
    def total(self) -> int:
        return self.count


@contextlib.contextmanager
def count_syncs():
    """Count host syncs inside the block: data-dependent aten ops and .tolist()/.cpu()/.numpy()."""
    with SyncCount() as counter:
        yield counter


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)

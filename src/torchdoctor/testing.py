"""Test helpers: count the host-device synchronizations a block of code would cause.

Example:
    >>> import torch
    >>> from torchdoctor.testing import count_host_syncs
    >>> x = torch.arange(4.0)
    >>> with count_host_syncs() as syncs:
    ...     _ = (x * 2).sum().item()
    >>> syncs.count
    1
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_SYNC_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)
_EXTRA = {"aten::_local_scalar_dense", "aten::equal", "aten::is_nonzero"}


def _is_sync(func: Any, args: tuple, kwargs: dict) -> bool:
    name = func._schema.name
    if name == "aten::index":  # only boolean-mask indexing has a data-dependent shape
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
        )
    return name in _EXTRA or any(tag in func.tags for tag in _SYNC_TAGS)


class count_host_syncs(TorchDispatchMode):  # noqa: N801 (used as a context manager)
    """Count aten ops that synchronize with the host on CUDA (and would, on CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_sync(func, args, kwargs):
            self.ops[func._schema.name] += 1
        return func(*args, **kwargs)

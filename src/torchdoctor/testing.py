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
from torch.overrides import TorchFunctionMode
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


# Host reads that never reach aten dispatch on a CPU tensor (.item(), bool(), int() do, as
# aten::_local_scalar_dense): seen one level up, as tensor methods.
_UNSEEN_READS = {"tolist", "numpy", "cpu"}


def _to_host(args: tuple, kwargs: dict) -> bool:
    """``tensor.to(...)`` moving an accelerator tensor to the CPU. (On a CPU tensor ``.to(d)``
    is counted nowhere: code writes ``.to(x.device)`` for uploads too, which are no reads.)"""
    if not args or not isinstance(args[0], torch.Tensor) or args[0].device.type == "cpu":
        return False
    for value in (*args[1:], *kwargs.values()):
        if isinstance(value, (str, torch.device)):
            try:
                return torch.device(value).type == "cpu"
            except (RuntimeError, TypeError):
                continue
    return False


class _HostReads(TorchFunctionMode):
    def __init__(self, ops: Counter[str]) -> None:
        super().__init__()
        self.ops = ops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _UNSEEN_READS or (name == "to" and _to_host(args, kwargs)):
            self.ops[f"Tensor.{name}"] += 1
        return func(*args, **kwargs)


class count_host_syncs(TorchDispatchMode):  # noqa: N801 (used as a context manager)
    """Count the ops that synchronize with the host on CUDA (and would, on CPU tensors).

    Two kinds are counted: aten ops whose output depends on the data (``.item()``, boolean-mask
    indexing, ``nonzero``, ``unique``, ...), seen at dispatch; and reads of a whole tensor into
    host memory (``.tolist()``, ``.numpy()``, ``.cpu()``, and ``.to("cpu")`` of an accelerator
    tensor), which never reach dispatch on a CPU tensor and are seen as tensor methods. ``ops`` maps each name to its
    count. Code that reads CPU memory deliberately (an engine that only runs on CPU tensors)
    can hide the read with ``torch._C.DisableTorchFunction()``.

    Example:
        >>> import torch
        >>> t = torch.arange(4.0)
        >>> with count_host_syncs() as syncs:
        ...     _ = t[t > 1]  # a boolean mask: the result's size depends on the data
        ...     _ = t.tolist()
        >>> syncs.count >= 2
        True
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self._reads = _HostReads(self.ops)

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def __enter__(self):
        self._reads.__enter__()
        try:
            return super().__enter__()
        except BaseException:
            self._reads.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._reads.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_sync(func, args, kwargs):
            self.ops[func._schema.name] += 1
        return func(*args, **kwargs)

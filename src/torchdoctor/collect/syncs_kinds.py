"""Which calls synchronize the host with the device, and under what name (the sync *kind*).

Two tables, one per interception level used by :mod:`torchdoctor.collect.syncs`:

- :func:`function_kind` classifies Python-level torch calls seen by a ``TorchFunctionMode``
  (``Tensor.item``, ``Tensor.__bool__``, ``torch.nonzero``, boolean-mask ``__getitem__`` ...).
- :func:`aten_kind` classifies aten operators seen by a ``TorchDispatchMode`` using their tags
  (``data_dependent_output``, ``dynamic_output_shape``) plus boolean-mask indexing, which has no
  tag of its own.

Both return ``None`` for calls that do not synchronize. Pure classification: no state, no I/O.

Example:
    >>> import torch
    >>> from torchdoctor.collect.syncs_kinds import function_kind
    >>> x = torch.arange(4.0)
    >>> function_kind(torch.Tensor.item, (x,), {})
    'item'
    >>> function_kind(torch.Tensor.__getitem__, (x, x > 1), {}), function_kind(torch.add, (x, x), {})
    ('bool_index', None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

_T = torch.Tensor
_MASK_DTYPES = (torch.bool, torch.uint8)


def _pairs(*entries: tuple[Any, str]) -> dict[Any, str]:
    out: dict[Any, str] = {}
    for func, kind in entries:
        if func is not None:
            out[func] = kind
    return out


#: calls that always read device data on the host (when their tensor lives on a device).
_ALWAYS: dict[Any, str] = _pairs(
    (_T.item, "item"),
    (_T.tolist, "tolist"),
    (_T.numpy, "numpy"),
    (getattr(_T, "__array__", None), "numpy"),
    (_T.cpu, "cpu"),
    (_T.__bool__, "bool"),
    (_T.__float__, "float"),
    (_T.__int__, "int"),
    (_T.__index__, "index"),
    (getattr(_T, "__complex__", None), "complex"),
    (_T.__format__, "format"),
    (_T.__repr__, "repr"),
    (getattr(_T, "__contains__", None), "contains"),
    (torch.is_nonzero, "bool"),
    (_T.is_nonzero, "bool"),
    (torch.nonzero, "nonzero"),
    (_T.nonzero, "nonzero"),
    (torch.argwhere, "nonzero"),
    (_T.argwhere, "nonzero"),
    (torch.unique, "unique"),
    (_T.unique, "unique"),
    (torch.unique_consecutive, "unique"),
    (_T.unique_consecutive, "unique"),
    (torch.masked_select, "masked_select"),
    (_T.masked_select, "masked_select"),
    (torch.equal, "equal"),
    (_T.equal, "equal"),
    (torch.allclose, "allclose"),
    (_T.allclose, "allclose"),
    (torch.bincount, "bincount"),
    (_T.bincount, "bincount"),
)


def _has_mask(index: Any) -> bool:
    if isinstance(index, torch.Tensor):
        return index.dtype in _MASK_DTYPES
    if isinstance(index, tuple | list):
        return any(isinstance(i, torch.Tensor) and i.dtype in _MASK_DTYPES for i in index)
    return False


def _bool_index(args: tuple, kwargs: dict) -> str | None:
    return "bool_index" if len(args) > 1 and _has_mask(args[1]) else None


def _bool_setitem(args: tuple, kwargs: dict) -> str | None:
    if len(args) < 2 or not _has_mask(args[1]):
        return None
    value = args[2] if len(args) > 2 else kwargs.get("value")
    one_value = isinstance(value, bool | int | float) or (
        isinstance(value, torch.Tensor) and value.numel() == 1 and value.device.type == "cpu"
    )
    if one_value and _one_mask(args[1]):
        return None  # x[mask] = 0 runs as masked_fill_: no nonzero, no sync
    return "bool_setitem"


def _one_mask(index: Any) -> bool:
    """The index is one boolean mask and no other tensor: ``index_put_`` then dispatches to
    ``masked_fill_`` for a single host value (ATen's canDispatchToMaskedFill).

    Example:
        >>> m = torch.ones(3, dtype=torch.bool)
        >>> _one_mask(m), _one_mask((m, slice(None))), _one_mask((m, torch.tensor([0])))
        (True, True, False)
    """
    items = index if isinstance(index, tuple | list) else (index,)
    tensors = [i for i in items if isinstance(i, torch.Tensor)]
    return len(tensors) == 1 and tensors[0].dtype in _MASK_DTYPES


def _where_one_arg(args: tuple, kwargs: dict) -> str | None:
    return "nonzero" if len(args) + len(kwargs) == 1 else None


def _tensor_repeats(args: tuple, kwargs: dict) -> str | None:
    if kwargs.get("output_size") is not None:
        return None  # the caller told torch the size: no sync
    # torch.repeat_interleave(x, repeats) and x.repeat_interleave(repeats); the one-argument
    # form torch.repeat_interleave(repeats) takes the repeats first.
    repeats = kwargs.get("repeats", args[1] if len(args) > 1 else args[0] if args else None)
    return "repeat_interleave" if isinstance(repeats, torch.Tensor) else None


def _one_hot_without_classes(args: tuple, kwargs: dict) -> str | None:
    classes = kwargs.get("num_classes", args[1] if len(args) > 1 else -1)
    return "one_hot" if classes == -1 else None


def _to_host(args: tuple, kwargs: dict) -> str | None:
    """``Tensor.to(...)`` whose target device is the CPU (the caller checks the source)."""
    if kwargs.get("non_blocking"):
        return None
    target = kwargs.get("device")
    if target is None:
        for value in args[1:]:
            if isinstance(value, str | torch.device):
                target = value
                break
            if isinstance(value, torch.Tensor):
                target = value.device
                break
    if target is None:
        return None  # a dtype-only conversion stays on its device
    try:
        return "cpu" if torch.device(target).type == "cpu" else None
    except (RuntimeError, TypeError):
        return None


#: calls that synchronize only for some arguments: func -> predicate returning a kind or None.
_CONDITIONAL: dict[Any, Callable[[tuple, dict], str | None]] = {
    _T.__getitem__: _bool_index,
    _T.__setitem__: _bool_setitem,
    torch.where: _where_one_arg,
    torch.repeat_interleave: _tensor_repeats,
    _T.repeat_interleave: _tensor_repeats,
    F.one_hot: _one_hot_without_classes,
    _T.to: _to_host,
}

#: every function the fast mode must look at; anything else is passed through untouched.
WATCHED: frozenset = frozenset(_ALWAYS) | frozenset(_CONDITIONAL)


def function_kind(func: Any, args: tuple, kwargs: dict) -> str | None:
    """The sync kind of a Python-level torch call, or None when it does not synchronize.

    Example:
        >>> x = torch.ones(3)
        >>> function_kind(_T.item, (x,), {}), function_kind(_T.__getitem__, (x, x > 0), {})
        ('item', 'bool_index')
        >>> function_kind(_T.add, (x, x), {}) is None
        True
    """
    kind = _ALWAYS.get(func)
    if kind is not None:
        return kind
    predicate = _CONDITIONAL.get(func)
    return predicate(args, kwargs) if predicate is not None else None


# ---------------------------------------------------------------------------------------------
# aten level (TorchDispatchMode)

_SYNC_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)
_ATEN_NAMES = {
    "aten::_local_scalar_dense": "item",
    "aten::is_nonzero": "bool",
    "aten::nonzero": "nonzero",
    "aten::argwhere": "nonzero",
    "aten::_unique": "unique",
    "aten::_unique2": "unique",
    "aten::unique_dim": "unique",
    "aten::unique_consecutive": "unique",
    "aten::unique_dim_consecutive": "unique",
    "aten::masked_select": "masked_select",
    "aten::repeat_interleave": "repeat_interleave",
    "aten::equal": "equal",
    "aten::allclose": "allclose",
    "aten::bincount": "bincount",
}
_INDEX_OPS = {"aten::index": "bool_index"}
_INDEX_PUT_OPS = {"aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}
_COPY_OPS = {"aten::_to_copy", "aten::copy_"}

_NOT_SYNC = object()
_aten_cache: dict[Any, Any] = {}


def _static_aten_kind(func: Any) -> Any:
    name = func._schema.name
    if name in _ATEN_NAMES:
        return _ATEN_NAMES[name]
    if name in _INDEX_OPS:
        return "index?"
    if name in _INDEX_PUT_OPS:
        return "index_put?"
    if name in _COPY_OPS:
        return "copy?"
    if any(tag in func.tags for tag in _SYNC_TAGS):
        return name.split("::", 1)[-1]
    return _NOT_SYNC


def aten_kind(func: Any, args: tuple, kwargs: dict) -> str | None:
    """The sync kind of an aten operator call, or None when it does not synchronize.

    Device-to-host copies (``_to_copy``/``copy_`` from an accelerator into CPU memory) are
    reported as ``cpu``; they can only be recognized on a run with an accelerator.

    Example:
        >>> x = torch.ones(3)
        >>> aten = torch.ops.aten
        >>> aten_kind(aten.nonzero.default, (x,), {}), aten_kind(aten.index.Tensor, (x, [x > 0]), {})
        ('nonzero', 'bool_index')
        >>> aten_kind(aten.add.Tensor, (x, x), {}) is None
        True
    """
    kind = _aten_cache.get(func)
    if kind is None:
        kind = _aten_cache[func] = _static_aten_kind(func)
    if kind is _NOT_SYNC:
        return None
    if kind == "index?":
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return "bool_index" if _has_mask(tuple(indices)) else None
    if kind == "index_put?":
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if not _has_mask(tuple(indices)):
            return None
        value = args[2] if len(args) > 2 else kwargs.get("values")
        accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
        if (
            not accumulate
            and isinstance(value, torch.Tensor)
            and value.numel() == 1
            and value.device.type == "cpu"
            and _one_mask(tuple(i for i in indices if i is not None))
        ):
            return None  # dispatched to masked_fill_ with the value read on the host: no sync
        return "bool_setitem"
    if kind == "copy?":
        return _device_to_host_copy(func, args, kwargs)
    return kind


def _device_to_host_copy(func: Any, args: tuple, kwargs: dict) -> str | None:
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    if func._schema.name == "aten::copy_":
        dst, src = args[0], args[1] if len(args) > 1 else kwargs.get("src")
        if isinstance(src, torch.Tensor) and src.device.type not in ("cpu", "meta"):
            return "cpu" if dst.device.type == "cpu" and not kwargs.get("non_blocking") else None
        return None
    source, target = args[0].device, kwargs.get("device")
    if source.type in ("cpu", "meta") or target is None or kwargs.get("non_blocking"):
        return None
    return "cpu" if torch.device(target).type == "cpu" else None

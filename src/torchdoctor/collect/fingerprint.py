"""Cheap fingerprints of a module call's inputs, to spot loop-invariant recomputation.

Two calls of the same module within one step whose inputs have equal fingerprints, while its
parameters kept their versions (no optimizer step or in-place update in between), computed the
same thing twice (seed 001: the encoder re-run by every denoising step on unchanged inputs).
A tensor is identified by its data pointer (storage and offset), ``_version`` (bumped by
in-place writes), shape, stride, dtype and device; other arguments by value when they are
small immutables, else by type and identity. Memory can be reused after a tensor is freed, so
a fingerprint also carries a weak reference to its first tensor: a later match counts only while
that tensor is still alive. Keyword arguments are not seen by forward pre-hooks and are ignored.

Example:
    >>> import torch
    >>> x = torch.ones(3)
    >>> fingerprint((x,))[0] == fingerprint((x,))[0]
    True
    >>> before = fingerprint((x,))[0]
    >>> _ = x.add_(1)  # an in-place write bumps the version: no longer the same input
    >>> fingerprint((x,))[0] == before
    False
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

_SCALARS = (int, float, bool, str, type(None))


def fingerprint(args: tuple) -> tuple[tuple, Callable[[], Any]] | None:
    """``(signature, anchor)`` for positional args, or None when no argument is a tensor.

    ``anchor()`` returns the first tensor while it is alive, None after it was freed.

    Example:
        >>> import torch
        >>> x = torch.zeros(2, 3)
        >>> signature, anchor = fingerprint((x, 4))
        >>> signature[0][1:4], signature[1], anchor() is x
        ((0, torch.Size([2, 3]), (3, 1)), 4, True)
        >>> fingerprint((1, "a")) is None  # no tensor: nothing to track
        True
    """
    parts: list[Any] = []
    anchor = None
    for arg in args:
        if isinstance(arg, torch.Tensor):
            if anchor is None:
                anchor = arg
            parts.append(
                (arg.data_ptr(), arg._version, arg.shape, arg.stride(), arg.dtype, arg.device)
            )
        elif isinstance(arg, _SCALARS):
            parts.append(arg)
        else:
            parts.append((type(arg), id(arg)))
    if anchor is None:
        return None
    try:
        return tuple(parts), weakref.ref(anchor)
    except TypeError:  # pragma: no cover - tensors always support weak references
        return None

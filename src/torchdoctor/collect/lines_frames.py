"""Which source line a torch call belongs to: the first *user* frame on the Python stack.

Frames are sorted into three kinds, cached per code object:

- ``TRANSPARENT``: torch (and functorch), the Python standard library, frozen modules, code
  generated with ``exec`` (``<string>``: dataclass and namedtuple methods) and torchdoctor's
  collection machinery; skipped as if absent;
- ``LIBRARY``: third-party packages (``site-packages`` / ``dist-packages``), the Python
  torch.compile writes (Inductor's output code) and torchdoctor's own code a user calls
  (``torchdoctor.ops``, ``train``, ``workloads``, ...): the call is charged to the user line
  that called into them, and the innermost such frame is kept as *detail*
  ("via"); when no user frame is above it (a library calling torch by itself), the innermost
  library frame is the line;
- ``USER``: everything else (the script, the user's package);
- ``PROFILER``: torchdoctor's own hooks (``collect/`` but the sync audit's modes, which hand
  user calls on): a call made there is the profiler's overhead, charged to no line.

Example:
    >>> kind_of_file(__file__) == PROFILER
    True
    >>> kind_of_file("/home/me/train.py") == USER
    True
"""

from __future__ import annotations

import os
from types import CodeType, FrameType

from torchdoctor.collect import syncs_frames
from torchdoctor.session_read import compiled_output

TRANSPARENT, LIBRARY, USER, PROFILER = 0, 1, 2, 3

_PACKAGE = syncs_frames._PACKAGE
_SITE = tuple(os.sep + name + os.sep for name in ("site-packages", "dist-packages"))
_kinds: dict[int, tuple[CodeType, int]] = {}


_COLLECT = COLLECT = _PACKAGE + "collect" + os.sep  # (public: the samplers' test)
_HANDS_ON = (_COLLECT + "syncs",)  # the sync audit's modes and wrappers call the user's op


def kind_of_file(name: str) -> int:
    """The kind of a source file name (see the module docstring).

    Example:
        >>> kind_of_file("/venv/lib/python3.11/site-packages/timm/layers.py") == LIBRARY
        True
        >>> kind_of_file("<string>") == TRANSPARENT  # exec'd code: a dataclass's __init__
        True
    """
    if name.startswith(_COLLECT) and not name.startswith(_HANDS_ON):
        return PROFILER
    if (
        name.startswith("<frozen")
        or name == "<string>"  # code generated with exec: dataclass and namedtuple methods
        or name.startswith(syncs_frames._TORCH)
        or name.startswith(syncs_frames._OWN)
        or "functorch" in name.split(os.sep)[-3:-1]
    ):
        return TRANSPARENT
    if name.startswith(_PACKAGE) or any(marker in name for marker in _SITE):
        return LIBRARY
    if compiled_output(name):  # (Inductor's output code: the compiled graph's, "via" it)
        return LIBRARY
    if any(name.startswith(prefix) for prefix in syncs_frames._extra_prefixes):
        return LIBRARY
    if name.startswith(syncs_frames._STDLIB):
        return TRANSPARENT
    return USER


def kind_of(code: CodeType) -> int:
    """:func:`kind_of_file` of a code object, cached by the code object's identity (code
    objects compare equal across files when their bytecode, names and line are the same).

    Example:
        >>> import json
        >>> kind_of(json.dumps.__code__) == TRANSPARENT  # the standard library
        True
        >>> kind_of(kind_of.__code__) == PROFILER  # torchdoctor's collection machinery
        True
    """
    key = id(code)
    cached = _kinds.get(key)
    if cached is not None and cached[0] is code:
        return cached[1]
    kind = kind_of_file(code.co_filename)
    _kinds[key] = (code, kind)
    return kind


_torch_codes: dict[int, tuple[CodeType, bool]] = {}


def in_torch(code: CodeType) -> bool:
    """Whether a code object is torch's own Python (cached like :func:`kind_of`).

    Example:
        >>> import torch
        >>> in_torch(torch.nn.Module.__call__.__code__), in_torch(in_torch.__code__)
        (True, False)
    """
    cached = _torch_codes.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    inside = code.co_filename.startswith(syncs_frames._TORCH)
    _torch_codes[id(code)] = (code, inside)
    return inside


def locate(
    frame: FrameType | None,
) -> tuple[FrameType | None, FrameType | None, FrameType | None]:
    """``(line frame, via frame, entry frame)``: the first user frame from ``frame`` outwards,
    the innermost library frame below it (None when the call came straight from user code),
    and the frame the line called into (None when the torch call was made by the line itself).
    With no user frame (library code run by ``torchdoctor demo`` / ``profile``), the innermost
    library frame is the line; with neither, or when the call comes from the profiler's own
    hooks, ``(None, None, None)``.

    Example:
        >>> import sys
        >>> line, via, entry = locate(sys._getframe())  # a doctest: torchdoctor's own code
        >>> line.f_code.co_filename.startswith("<doctest"), via is None, entry is None
        (True, True, True)
    """
    via = entry = None
    f = frame
    kinds = _kinds
    while f is not None:
        code = f.f_code
        cached = kinds.get(id(code))
        kind = cached[1] if cached is not None and cached[0] is code else kind_of(code)
        if kind == USER:
            return f, via, entry
        if kind == PROFILER:  # the profiler's hooks made the call, or (below library code)
            return (via, None, None) if via is not None else (None, None, None)  # drove it
        if kind == LIBRARY and via is None:
            via = f
        entry = f
        f = f.f_back
    return via, None, None

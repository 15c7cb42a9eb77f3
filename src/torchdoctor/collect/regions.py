"""``torchdoctor.region(name)`` and ``torchdoctor.step()``: user markers for the profiler.

Both are no-ops costing well under a microsecond when no profiler is active: they check
``STATE.profiler is None`` first and return. Under a profiler, a region becomes a node of the
tree, nested under the module (or region) that is running, and modules called inside it nest
under the region; ``step()`` ends the current step (manual and auto step boundaries).

Example:
    >>> import torchdoctor
    >>> with torchdoctor.region("hungarian"):
    ...     pass
    >>> @torchdoctor.region("post")
    ... def post(x):
    ...     return x + 1
    >>> post(1)
    2
    >>> torchdoctor.step()  # no profiler: nothing happens
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from torchdoctor.collect.state import STATE

F = TypeVar("F", bound=Callable[..., Any])


class Region:
    """A named region: a context manager and a decorator (get one with :func:`region`).

    Entering records a region node under the running module when a profiler is active; the
    handles of nested entries are kept on a small stack, so one object may be re-entered.

    Example:
        >>> with region("matching"):
        ...     total = sum(range(3))
        >>> total
        3
    """

    __slots__ = ("name", "_handles")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"region name must be a non-empty string, got {name!r}; "
                'write torchdoctor.region("hungarian")'
            )
        self.name = name
        self._handles: list[Any] = []

    def __enter__(self) -> Region:
        profiler = STATE.profiler
        if profiler is None:
            return self
        self._handles.append((profiler, profiler.enter_region(self.name, sys._getframe(1))))
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._handles:
            profiler, handle = self._handles.pop()
            if STATE.profiler is profiler:
                profiler.exit_region(handle)

    def __call__(self, function: F) -> F:
        name = self.name

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            profiler = STATE.profiler
            if profiler is None:
                return function(*args, **kwargs)
            handle = profiler.enter_region(name, function)
            try:
                return function(*args, **kwargs)
            finally:
                if STATE.profiler is profiler:
                    profiler.exit_region(handle)

        return wrapper  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"region({self.name!r})"


_REGIONS: dict[str, Region] = {}
_MAX_CACHED = 4096


def region(name: str) -> Region:
    """The region called ``name`` (one cached object per name, so the no-op path allocates
    nothing): ``with torchdoctor.region("hungarian"): ...`` or ``@torchdoctor.region("x")``.

    Example:
        >>> region("loss") is region("loss")
        True
    """
    try:
        found = _REGIONS.get(name)
    except TypeError:  # unhashable
        found = None
    if found is not None:
        return found
    made = Region(name)
    if len(_REGIONS) < _MAX_CACHED:
        _REGIONS[name] = made
    return made


def step() -> None:
    """Mark the end of a step for the active profiler; a no-op without one.

    Example:
        >>> step()
    """
    profiler = STATE.profiler
    if profiler is not None:
        profiler.user_marker()

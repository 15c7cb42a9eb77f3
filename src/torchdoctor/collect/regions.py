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


class region:  # noqa: N801 - used like a function: torchdoctor.region("name")
    """Name a block of non-module code; a context manager and a decorator.

    Example:
        >>> with region("matching"):
        ...     total = sum(range(3))
        >>> total
        3
    """

    __slots__ = ("name", "_handle")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"region name must be a non-empty string, got {name!r}; "
                'write torchdoctor.region("hungarian")'
            )
        self.name = name
        self._handle = None

    def __enter__(self) -> region:
        profiler = STATE.profiler
        if profiler is None:
            return self
        frame = sys._getframe(1)
        self._handle = profiler._enter_region(self.name, frame)
        return self

    def __exit__(self, *exc: Any) -> None:
        handle = self._handle
        if handle is not None:
            self._handle = None
            profiler = STATE.profiler
            if profiler is not None:
                profiler._exit_region(handle)

    def __call__(self, function: F) -> F:
        name = self.name

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            profiler = STATE.profiler
            if profiler is None:
                return function(*args, **kwargs)
            handle = profiler._enter_region(name, function)
            try:
                return function(*args, **kwargs)
            finally:
                if STATE.profiler is profiler:
                    profiler._exit_region(handle)

        return wrapper  # type: ignore[return-value]


def step() -> None:
    """Mark the end of a step for the active profiler; a no-op without one.

    Example:
        >>> step()
    """
    profiler = STATE.profiler
    if profiler is not None:
        profiler._marker()

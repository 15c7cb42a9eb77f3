"""A data iterable whose ``next()`` counts as the ``data`` phase of the active profiler.

Example:
    >>> import torch, torchdoctor
    >>> with torchdoctor.Profiler(syncs=False) as prof:
    ...     batches = list(prof.wrap_loader([1, 2]))
    >>> batches
    [1, 2]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from torchdoctor.collect.state import STATE


class TimedLoader:
    """An iterable whose ``next()`` counts as the ``data`` phase of the active profiler.

    Example:
        >>> list(TimedLoader(profiler=object(), iterable=[1, 2, 3]))  # no active profiler: untimed
        [1, 2, 3]
    """

    def __init__(self, profiler: Any, iterable: Iterable[Any]) -> None:
        self._profiler = profiler
        self._iterable = iterable

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self._iterable)
        profiler = self._profiler
        while True:
            timed = STATE.profiler is profiler and profiler.data_phase(entering=True)
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                if timed:
                    profiler.data_phase(entering=False)
            yield item

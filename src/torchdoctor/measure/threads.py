"""Run a block with a given number of torch intra-op threads, then restore the previous count.

Small-op benchmarks run on one thread: on a shared 2-core box, intra-op parallel regions stall
whenever another process holds a core, which adds noise without adding speed.

Example:
    >>> import torch
    >>> from torchdoctor.measure import intra_op_threads
    >>> before = torch.get_num_threads()
    >>> with intra_op_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["intra_op_threads"]


@contextmanager
def intra_op_threads(count: int) -> Iterator[int]:
    """Set ``torch.set_num_threads(count)`` inside the block; yields the previous count.

    Example:
        >>> before = torch.get_num_threads()
        >>> with intra_op_threads(1) as previous:
        ...     torch.get_num_threads(), previous == before
        (1, True)
        >>> torch.get_num_threads() == before
        True
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"intra_op_threads: count must be an int >= 1, got {count!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield previous
    finally:
        torch.set_num_threads(previous)

"""Count the host-device synchronizations one call of a workload step would cause.

Uses torchdoctor's sync audit when it is importable (it also sees ``.cpu()``/``.tolist()``),
else the dispatch-level counter of :mod:`torchdoctor.testing` (``.item()``, ``nonzero``, ...).

Example:
    >>> import torch
    >>> count_syncs(lambda: torch.ones(2).sum().item())
    1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def count_syncs(fn: Callable[[], Any]) -> int:
    """Run ``fn`` once and return how many host syncs it caused (would cause, on CUDA)."""
    from torchdoctor.testing import count_host_syncs

    with count_host_syncs() as counter:
        fn()
    return counter.count

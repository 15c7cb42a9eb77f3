"""Count the host-device synchronizations one call of a workload step would cause.

Uses torchdoctor's sync audit (it sees ``.item()``, ``.cpu()``, ``.tolist()``, one-argument
``torch.where``, ``unique``, boolean masks, ...; on a CPU run each is "would sync on CUDA").
Falls back to the dispatch-level counter of :mod:`torchdoctor.testing` when the audit is not
importable.

Example:
    >>> import torch
    >>> weights = torch.nn.Parameter(torch.ones(2))  # device data in a GPU run
    >>> count_syncs(lambda: weights.sum().item())
    1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def count_syncs(fn: Callable[[], Any]) -> int:
    """Run ``fn`` once and return how many host syncs it caused (would cause, on CUDA).

    Example:
        >>> import torch
        >>> t = torch.ones(3)
        >>> count_syncs(lambda: t.sum().item()), count_syncs(lambda: t * 2)
        (1, 0)
    """
    try:
        from torchdoctor.collect.syncs import sync_audit
    except ImportError:
        from torchdoctor.testing import count_host_syncs

        with count_host_syncs() as counter:
            fn()
        return counter.count
    with sync_audit() as audit:
        fn()
    return sum(int(r["count"]) for r in audit.records())

"""Peak memory per step: CUDA allocator peak (reset each step) or the process's peak RSS growth.

Activation memory per module (bytes a forward saves for backward) is counted by the recorder's
``saved_tensors_hooks`` pack hook (``collect/recorder.py``); this file measures the step peak.
On CPU, the peak resident set size only grows, so a step after warm-up usually reports 0 bytes
of growth: that means the step fit in memory the process already had.

Example:
    >>> meter = PeakMemory("cpu")
    >>> meter.begin()
    >>> isinstance(meter.end(), int)
    True
"""

from __future__ import annotations

import sys


def _max_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class PeakMemory:
    """Measures one step's peak memory on ``device`` ('cpu' or 'cuda[:n]').

    Example:
        >>> meter = PeakMemory("cpu")
        >>> meter.begin()
        >>> grown = meter.end()
        >>> grown is None or grown >= 0
        True
    """

    def __init__(self, device: str) -> None:
        self.cuda = str(device).startswith("cuda")
        self._start: int | None = None

    def begin(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self._start = None
        else:
            self._start = _max_rss_bytes()

    def end(self) -> int | None:
        if self.cuda:
            import torch

            return int(torch.cuda.max_memory_allocated())
        now = _max_rss_bytes()
        if now is None or self._start is None:
            return None
        return max(0, now - self._start)

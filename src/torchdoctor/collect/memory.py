"""Peak memory per step: CUDA allocator peak (reset each step) or the process's peak RSS growth.

Activation memory per module (bytes a forward saves for backward) is counted by the recorder's
``saved_tensors_hooks`` pack hook (``collect/recorder.py``); this file measures the step peak.
On CPU, the peak resident set size only grows, so a step after warm-up usually reports 0 bytes
of growth: that means the step fit in memory the process already had. Light steps (outside
detail windows) do not read it on CPU (None): the system call costs about 8 us right after a
step's compute, a tenth of a light step's whole bookkeeping, for a figure that is almost always 0.

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
        >>> meter.begin(light=True); meter.end() is None  # light steps: not read on CPU
        True
    """

    def __init__(self, device: str) -> None:
        self.cuda = str(device).startswith("cuda")
        self._start: int | None = None

    def begin(self, light: bool = False) -> None:
        """Start measuring a step (``light``: a light step; on CPU it is not measured)."""
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self._start = None
        else:
            self._start = None if light else _max_rss_bytes()

    def end(self) -> int | None:
        """The step's peak: CUDA allocator peak, or CPU peak RSS growth (None: not measured)."""
        if self.cuda:
            import torch

            return int(torch.cuda.max_memory_allocated())
        if self._start is None:
            return None
        now = _max_rss_bytes()
        if now is None:
            return None
        return max(0, now - self._start)

"""CUDA only: capture ``torch.cuda.set_sync_debug_mode("warn")`` warnings as sync events.

PyTorch warns once per synchronizing CUDA call when the debug mode is ``"warn"``. While the
audit runs, the mode is set, every such warning is turned into an event at the user's line
(instead of being printed) and the previous mode and warning display are restored at exit.
Other warnings pass through untouched. Untested on real CUDA in this repository's CI (no GPU).

Example:
    >>> from torchdoctor.collect.syncs_cuda import CudaSyncWarnings
    >>> capture = CudaSyncWarnings(lambda: None)
    >>> capture.active  # stays inactive without CUDA
    False
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

_MESSAGE = "called a synchronizing CUDA operation"


class CudaSyncWarnings:
    """Install/remove the capture; ``on_warning()`` is called for each sync warning.

    Example:
        >>> seen = []
        >>> capture = CudaSyncWarnings(lambda: seen.append(1))
        >>> capture.install()  # sets the CUDA sync debug mode, only where CUDA is present
        >>> capture.active == torch.cuda.is_available()
        True
        >>> capture.remove()
        >>> capture.active
        False
    """

    def __init__(self, on_warning: Callable[[], None]) -> None:
        self.on_warning = on_warning
        self.active = False
        self._previous_mode: Any = None
        self._previous_show: Any = None
        self._filters: Any = None

    def install(self) -> None:
        if not torch.cuda.is_available() or self.active:
            return
        self._previous_mode = torch.cuda.get_sync_debug_mode()
        self._previous_show = warnings.showwarning
        self._filters = warnings.filters[:]
        warnings.filterwarnings("always", message=f".*{_MESSAGE}")
        previous = self._previous_show

        def show(message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
            if _MESSAGE in str(message):
                self.on_warning()
            else:
                previous(message, category, filename, lineno, *rest)

        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        self.active = True

    def remove(self) -> None:
        if not self.active:
            return
        self.active = False
        torch.cuda.set_sync_debug_mode(self._previous_mode)
        warnings.showwarning = self._previous_show
        warnings.filters[:] = self._filters
        getattr(warnings, "_filters_mutated", lambda: None)()  # re-read the restored filters


def _device_name(predict: bool) -> str:
    """The audited device as the session names it (``cpu`` for a predicted run)."""
    if predict or not torch.cuda.is_available():
        return "cpu"
    index = torch.cuda.current_device()
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"

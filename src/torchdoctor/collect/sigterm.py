"""SIGTERM under `torchdoctor run`: raised in the script's main thread as :class:`Terminated`
(a ``KeyboardInterrupt``), so a run stopped by ``timeout``, a job scheduler or ``kill`` ends
through the same path as Ctrl-C and its report is written; forked children (multiprocessing
workers) keep SIGTERM's default, as without torchdoctor.

Example:
    >>> with sigterm_as_interrupt():
    ...     pass
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

__all__ = ["Terminated", "sigterm_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, a job scheduler, ``kill``) while the script runs: raised in the
    main thread like Ctrl-C, so the run ends through the same path and its report is written.
    A script that handles KeyboardInterrupt to shut down cleanly handles this too.

    Example:
        >>> isinstance(Terminated("terminated by signal 15 (SIGTERM)"), KeyboardInterrupt)
        True
    """


_SIGTERM_PID: list[int] = []  # the process whose SIGTERM raises Terminated (not its forks)


def _on_sigterm(signum: int, frame: Any) -> None:
    if _SIGTERM_PID and os.getpid() != _SIGTERM_PID[-1]:
        # a forked child (a multiprocessing pool's worker) inherited the handler: it dies of
        # the signal as it would without torchdoctor (Pool.terminate() sends SIGTERM; a
        # traceback from each worker is not the script's output)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated(f"terminated by signal {signum} (SIGTERM)")


def _default_sigterm_in_child() -> None:
    """A forked child (a multiprocessing worker) gets SIGTERM's default back at once: with the
    inherited Python handler, a SIGTERM sent right after ``Process.start()`` could land in
    the moments after the fork where Python drops pending signals, and the child ran on."""
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):  # (forked from another thread: the handler's check stands)
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_default_sigterm_in_child)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the script runs: SIGTERM raises :class:`Terminated` (only when nobody installed a
    handler of their own and this is the main thread; the script may still install its own)."""
    try:
        installed = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and (
            threading.current_thread() is threading.main_thread()
        )
        if installed:
            signal.signal(signal.SIGTERM, _on_sigterm)
            _SIGTERM_PID.append(os.getpid())
    except (ValueError, OSError, AttributeError):  # no signals here (embedded, Windows quirks)
        installed = False
    try:
        yield
    finally:
        if installed:
            _SIGTERM_PID.pop()
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

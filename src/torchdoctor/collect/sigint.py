"""Ctrl-C while a profiled script runs: never raised inside torchdoctor's own collection code.

Unprofiled, ``tensor[c] = v`` is one C call, and Python raises a Ctrl-C's KeyboardInterrupt at
the script's own bytecode: at a loop's back-edge, a call. Profiled, every torch call runs the
collectors' Python (the hot lines' and the sync audit's modes, the hooks), so the interrupt can
be raised inside the torch call, inside whatever ``try`` the script wrapped around it. char-rnn
wraps its per-character ``tensor[c] = all_characters.index(string[c])`` in a bare ``try: ...
except: continue``: under ``torchdoctor run`` 4 of 28 Ctrl-Cs were swallowed there and the run
went on until killed (clients round 17; the lost ones were raised in ``lines.py``'s timed call).

While the script runs, SIGINT's handler (only where it is Python's default) looks at the frame the
signal interrupted: inside a collector (a ``torchdoctor/collect`` frame, or torch's code a
collector called), it raises nothing and sends SIGINT again ``RESEND_S`` later, when the script
is most likely in its own code or in C; at most ``MAX_DEFERRALS`` times, then it raises where it
is. Anywhere else it raises KeyboardInterrupt as Python's handler does.

Example:
    >>> import signal
    >>> with sigint_outside_collectors():
    ...     signal.getsignal(signal.SIGINT).__name__
    '_on_sigint'
    >>> signal.getsignal(signal.SIGINT) is signal.default_int_handler
    True
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import torch

#: torchdoctor's collectors; the script runner and this module are the script's side
_COLLECT = os.path.dirname(os.path.abspath(__file__)) + os.sep
_NOT_COLLECTORS = tuple(_COLLECT + name for name in ("script.py", "sigint.py", "sigterm.py"))
_TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
#: seconds before the deferred SIGINT is sent again, and how often it is deferred at most
RESEND_S = 0.05
MAX_DEFERRALS = 20

_deferrals = 0
_timers: list[threading.Timer] = []


def inside_collector(frame: Any) -> bool:
    """Whether ``frame`` is a collector's, or torch's code called by one (walking out through
    torch's frames up to the first frame of neither).

    Example:
        >>> import sys
        >>> inside_collector(sys._getframe())  # (a doctest's frame: the caller's own code)
        False
    """
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_COLLECT) and not name.startswith(_NOT_COLLECTORS):
            return True
        if not name.startswith(_TORCH):
            return False
        frame = frame.f_back
    return False


def _on_sigint(signum: int, frame: Any) -> None:
    global _deferrals
    if _deferrals < MAX_DEFERRALS and inside_collector(frame):
        _deferrals += 1
        timer = threading.Timer(RESEND_S, os.kill, (os.getpid(), signal.SIGINT))
        timer.daemon = True
        _timers.append(timer)
        timer.start()
        return
    _deferrals = 0
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigint_outside_collectors() -> Iterator[None]:
    """Install the handler for the block (main thread, Python's default handler only); restore
    it and cancel a pending resend after."""
    global _deferrals
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):  # fmt: skip
        yield
        return
    _deferrals = 0
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        for timer in _timers:
            timer.cancel()
        _timers.clear()
        if signal.getsignal(signal.SIGINT) is _on_sigint:  # (the script may have set its own)
            signal.signal(signal.SIGINT, signal.default_int_handler)

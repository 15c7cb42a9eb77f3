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
is. Anywhere else it raises KeyboardInterrupt as Python's handler does. While one waits, the
profiler details no step (:func:`interrupt_pending`): a light step runs no collector's Python
inside torch calls, so the resend lands in the script's code (a per-element loop inside a bare
``try`` in a detail window otherwise kept the collectors busy through every resend: one Ctrl-C of
six lost, 1.5 s into such a run).

Example:
    >>> import signal
    >>> before = signal.signal(signal.SIGINT, signal.default_int_handler)  # (Python's own)
    >>> with sigint_outside_collectors():
    ...     signal.getsignal(signal.SIGINT).__name__
    '_on_sigint'
    >>> signal.getsignal(signal.SIGINT) is signal.default_int_handler
    True
    >>> _ = signal.signal(signal.SIGINT, before)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
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
MAX_DEFERRALS = 100

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


def interrupt_pending() -> bool:
    """Whether a Ctrl-C waits to be sent again (the profiler then details no step).

    Example:
        >>> interrupt_pending()
        False
    """
    return _deferrals > 0


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
    it and cancel a pending resend after.

    Example:
        >>> before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # (a `nohup ... &` job)
        >>> with sigint_outside_collectors():  # (an ignored Ctrl-C stays ignored)
        ...     signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        True
        >>> _ = signal.signal(signal.SIGINT, before)
    """
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
        _deferrals = 0  # (a resend dropped: no Ctrl-C waits any more)
        if signal.getsignal(signal.SIGINT) is _on_sigint:  # (the script may have set its own)
            signal.signal(signal.SIGINT, signal.default_int_handler)


#: what a Ctrl-C while the session is being written says (the script has stopped already)
FINISHING_MESSAGE = ("torchdoctor: writing the session and the report first "
                     "(Ctrl-C again to quit without them)")
_presses: list[int] = []  # Ctrl-Cs while finishing (a list: one run at a time, per process)


def _while_finishing(signum: int, frame: Any) -> None:
    _presses.append(signum)
    if len(_presses) == 1:
        print(FINISHING_MESSAGE, file=sys.stderr, flush=True)
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise KeyboardInterrupt


def defer_while_finishing() -> None:
    """After the script: a Ctrl-C (a second press, usually: the first stopped the script) waits
    until the session and its reports are written (a press said so once; the next one raises).
    Main thread, Python's default handler only; :func:`finished` restores it.

    Example:
        >>> before = signal.signal(signal.SIGINT, signal.default_int_handler)  # (Python's own)
        >>> defer_while_finishing(); signal.getsignal(signal.SIGINT).__name__
        '_while_finishing'
        >>> finished(), signal.getsignal(signal.SIGINT) is signal.default_int_handler
        (False, True)
        >>> _ = signal.signal(signal.SIGINT, before)
    """
    _presses.clear()
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):  # fmt: skip
        signal.signal(signal.SIGINT, _while_finishing)


def finished() -> bool:
    """Put Python's handler back; whether Ctrl-C was pressed while finishing (the user wants
    out: say where the session is and stop).

    Example:
        >>> finished()  # (nothing deferred: nothing pressed, nothing to put back)
        False
    """
    if signal.getsignal(signal.SIGINT) is _while_finishing:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return bool(_presses)

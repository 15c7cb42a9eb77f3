"""Ctrl-C under `torchdoctor run`: a KeyboardInterrupt is never raised inside the collectors'
own Python (the modes' handlers, the hooks) that runs inside a script's torch call; char-rnn's
bare `try: tensor[c] = ... except: continue` swallowed 4 of 28 Ctrl-Cs raised there."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from torchdoctor.collect import sigint
from torchdoctor.collect.sigint import inside_collector, sigint_outside_collectors

COLLECT = os.path.dirname(os.path.abspath(sigint.__file__))


def _frame_of(filename: str):
    """A frame whose code claims ``filename`` (as a collector's or a script's would)."""
    namespace: dict = {}
    exec(compile("import sys\ndef here():\n    return sys._getframe()\n", filename, "exec"),
         namespace)  # fmt: skip
    return namespace["here"]()


def test_a_collectors_frame_is_told_apart_from_the_scripts():
    assert inside_collector(_frame_of(os.path.join(COLLECT, "lines.py")))
    assert not inside_collector(_frame_of("/w/char-rnn/helpers.py"))  # the script's own line
    assert not inside_collector(_frame_of(os.path.join(COLLECT, "script.py")))  # (the runner)
    assert not inside_collector(sys._getframe())


def test_a_sigint_in_a_collector_is_sent_again_and_elsewhere_raised(monkeypatch):
    sent = []

    class Timer:
        def __init__(self, delay, fn, args):
            sent.append((delay, fn, args))
            self.daemon = False

        def start(self):
            pass

        def cancel(self):
            sent.append("cancelled")

    monkeypatch.setattr(sigint.threading, "Timer", Timer)
    with sigint_outside_collectors():
        handler = signal.getsignal(signal.SIGINT)
        assert handler(signal.SIGINT, _frame_of(os.path.join(COLLECT, "lines.py"))) is None
        assert sent[0][1:] == (os.kill, (os.getpid(), signal.SIGINT))
        with pytest.raises(KeyboardInterrupt):  # (near miss: the script's own frame)
            handler(signal.SIGINT, _frame_of("/w/char-rnn/helpers.py"))
    assert sent[-1] == "cancelled"  # (a resend pending at the end is dropped)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_deferring_has_a_limit(monkeypatch):
    monkeypatch.setattr(sigint.threading, "Timer", lambda *a: type(
        "T", (), {"daemon": False, "start": lambda self: None, "cancel": lambda self: None})())
    with sigint_outside_collectors():
        handler = signal.getsignal(signal.SIGINT)
        frame = _frame_of(os.path.join(COLLECT, "lines.py"))
        for _ in range(sigint.MAX_DEFERRALS):
            handler(signal.SIGINT, frame)
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, frame)


def test_a_scripts_own_handler_is_left_alone():
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, mine)
    try:
        with sigint_outside_collectors():
            assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)

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


@pytest.fixture(autouse=True)
def _pythons_own_handler():
    """Python's own Ctrl-C handler, as a terminal's `python` has: a suite started as a background
    job (`nohup ... &`) inherits an ignored SIGINT, which every handler here leaves alone."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


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


def test_a_ctrl_c_while_finishing_waits_once_then_raises(capfd):
    """After the script: the first press is told and waits for the session; the next raises."""
    sigint.defer_while_finishing()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # (Python runs the handler at the next bytecode)
        assert "Ctrl-C again to quit without them" in capfd.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # (the handler runs between bytecodes)
                pass
    finally:
        assert sigint.finished() is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    sigint.defer_while_finishing()
    assert sigint.finished() is False  # (no press this time)


def test_a_ctrl_c_while_the_session_is_written_keeps_it_and_stops(tmp_path, capsys, monkeypatch):
    """A second Ctrl-C right after the first (the script stopped; `run` writes the session, the
    reports, lints the script): the session and reports are still written, then `run` stops
    with 130 and says where they are, instead of a traceback and nothing."""
    from torchdoctor.cli import main
    from torchdoctor.commands import run as run_command

    original = run_command.write_or_keep

    def pressed_while_writing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # (the handler runs between bytecodes)
            pass
        return original(*args, **kwargs)

    monkeypatch.setattr(run_command, "write_or_keep", pressed_while_writing)
    script = tmp_path / "train.py"
    script.write_text("import torch\nnet = torch.nn.Linear(4, 1)\nopt = torch.optim.SGD(net.parameters(), 0.1)\n"
                      "for _ in range(4):\n    net(torch.randn(8, 4)).sum().backward(); opt.step(); opt.zero_grad()\n")
    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "--no-history", str(script)]) == 130
    err = capsys.readouterr().err
    assert "Ctrl-C again to quit without them" in err
    assert f"the session is in {out / 'session.json'}" in err
    assert (out / "session.json").exists() and (out / "report.md").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_before_the_script_ran_is_one_line(tmp_path, capsys, monkeypatch):
    from torchdoctor.cli import main
    from torchdoctor.commands import run as run_command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_command, "profile_script", interrupted)
    script = tmp_path / "train.py"
    script.write_text("print('never')\n")
    assert main(["run", "--out", str(tmp_path / "o"), "--no-history", str(script)]) == 130
    assert capsys.readouterr().err.strip() == (
        "torchdoctor run: interrupted (Ctrl-C) before anything was profiled")


def test_while_a_ctrl_c_waits_no_step_is_detailed(monkeypatch):
    """A light step runs none of the collectors' Python inside torch calls: the resend reaches
    the script's own code (a per-element loop inside a bare ``try`` kept the collectors busy
    through every resend of a detail window)."""
    import torch

    import torchdoctor

    monkeypatch.setattr(sigint.threading, "Timer", lambda *a: type(
        "T", (), {"daemon": False, "start": lambda self: None, "cancel": lambda self: None})())
    net = torch.nn.Linear(4, 1)
    with sigint_outside_collectors():
        signal.getsignal(signal.SIGINT)(signal.SIGINT, _frame_of(os.path.join(COLLECT, "lines.py")))
        assert sigint.interrupt_pending()
        with torchdoctor.Profiler(net, syncs=False, detail="always") as prof:
            for _ in range(4):
                net(torch.randn(2, 4)).sum().backward()
                prof.step()
    assert not sigint.interrupt_pending()  # (left with the block: a later profile details)
    assert prof.session["config"]["detail"]["detailed_steps"] == []

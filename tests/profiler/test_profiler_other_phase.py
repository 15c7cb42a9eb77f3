"""The other phase's lines (between optimizer.step() and the next forward), sampled: work that
makes no torch call (a garbage collection, a checkpoint's pickling) gets its line and advice."""

import gc
import signal
import time

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.advice import advise

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGPROF"), reason="POSIX only")


def _train(between, steps=8):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torchdoctor.Profiler(model, detail="always", syncs=False) as prof:
        for _ in range(steps):
            model(torch.randn(32, 64)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            between()
            prof.step()
    return prof.session.to_dict()


def _busy(seconds=0.03):
    end = time.thread_time() + seconds
    while time.thread_time() < end:  # (CPU work no torch call shows)
        sum(range(1000))


def test_work_between_steps_is_sampled_to_its_line_and_advised():
    session = _train(_busy)
    top = session["other_lines"][0]
    assert top["function"] == "_busy" and top["ms_per_step"] > 15.0  # of ~30 ms of CPU
    assert signal.getsignal(signal.SIGPROF) is signal.SIG_DFL  # the handler is gone again
    titles = [a.title for a in advise(session) if a.rule == "between-steps"]
    assert titles and "between optimizer.step() and the next forward" in titles[0]


def test_a_wait_is_charged_to_no_line():
    """CPU time is charged: a sleep (no CPU) before a short computation does not make that
    computation look slow."""
    session = _train(lambda: (time.sleep(0.03), sum(range(100))))
    assert sum(row["ms_per_step"] for row in session.get("other_lines") or ()) < 10.0


def test_a_script_that_samples_with_sigprof_itself_keeps_its_handler():
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGPROF, mine)
    try:
        session = _train(gc.collect, steps=3)
        assert signal.getsignal(signal.SIGPROF) is mine
        assert "other_lines" not in session
    finally:
        signal.signal(signal.SIGPROF, previous)


def test_a_run_without_steps_has_no_between_steps_lines(tmp_path):
    """A script that fails while importing (before any step) is one whole-run step: its
    imports are no "work between steps"."""
    import json
    import subprocess
    import sys

    script = tmp_path / "fails_early.py"
    script.write_text(
        "import time, json\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3:\n"
        "    json.dumps(list(range(1000)))\n"
        "raise SystemExit('no data')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "torchdoctor", "run", "--out", "o", "--no-history", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    session = json.loads((tmp_path / "o" / "session.json").read_text())
    assert session["config"]["step_boundary"] == "whole_run", done.stderr
    assert "other_lines" not in session and "Between steps" not in done.stdout

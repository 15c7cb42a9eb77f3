"""Checkpoints: a SIGKILLed run leaves a loadable, renderable session of its steps."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time

import pytest
import torch
from crash_helpers import command, environment, write_script

import torchdoctor
from torchdoctor.collect.checkpoint import Checkpointer, write_atomic
from torchdoctor.session import Session


def _wait_for_line(process: subprocess.Popen, wanted: str, timeout: float) -> list[str]:
    """Read the process's stdout (unbuffered) until a line equal to ``wanted`` (or fail)."""
    data = b""
    fd = process.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = data.decode().splitlines()
        if wanted in lines:
            return lines
        if not selector.select(timeout=1.0):
            if process.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    process.kill()
    raise AssertionError(f"never printed {wanted!r}; stdout so far: {data.decode()!r}")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_leaves_a_loadable_incomplete_session_of_the_steps(tmp_path):
    script = write_script(tmp_path, steps=5, sleep=0.3, tail="time.sleep(300)")
    out = tmp_path / "out"
    process = subprocess.Popen(
        command("run", "--checkpoint-every", "0.2", "--warmup", "0", "--live", "--out",
                str(out), str(script)),
        cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        lines = _wait_for_line(process, "trained", timeout=240)
        # the script now sleeps: the last step boundary wrote a checkpoint before the print
        os.kill(process.pid, signal.SIGKILL)
        err = process.communicate(timeout=60)[1].decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert lines[:5] == [f"script line {k}" for k in range(5)]
    # --live with stderr on a pipe: off, and said so
    assert "--live needs stderr on a terminal" in err
    assert "torchdoctor live" not in err

    session = Session.load(out / "session.json")
    config = session["config"]
    assert config["incomplete"] is True
    held = config["checkpoint"]["steps"]
    assert held >= 3  # the auto boundary may drop the first, partial iteration
    assert held == config["steps"] == len(session["steps"])
    assert [s["index"] for s in session["steps"]] == list(range(held))
    assert all(s["wall_ms"] >= 250 for s in session["steps"])  # each step slept 0.3 s
    assert config["notes"][0].startswith("incomplete:")
    assert session["tree"]["children"], "the module tree of the steps so far is there"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    report = subprocess.run(
        command("report", str(out / "session.json")), cwd=tmp_path, env=environment(),
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "incomplete: a checkpoint" in report.stdout
    assert f"profiled steps 0-{held - 1} ({held} steps)" in " ".join(report.stdout.split())


def test_profiler_checkpoints_during_the_run_and_the_final_session_replaces_it(tmp_path):
    path = tmp_path / "prof" / "session.json"
    net = torch.nn.Linear(4, 4)
    seen = []
    with torchdoctor.Profiler(net, syncs=False, checkpoint=path, checkpoint_every=1e-9) as prof:
        for _ in range(4):
            net(torch.ones(2, 4)).sum().backward()
            prof.step()
            seen.append(json.loads(path.read_text())["config"])
    # a checkpoint at every boundary (the period is tiny), each holding the steps so far
    assert [c["checkpoint"]["steps"] for c in seen] == [1, 2, 3, 4]
    assert all(c["incomplete"] for c in seen)
    final = Session.load(path)
    assert "incomplete" not in final["config"] and final["config"]["steps"] == 4
    assert len(prof.session["steps"]) == 4


def test_checkpoint_period_is_respected_and_failures_never_break_the_run(tmp_path, capsys):
    now = [0.0]
    built = []

    def build():
        built.append(now[0])
        return Session.new("x", with_environment=False)

    writer = Checkpointer(tmp_path / "s.json", 10.0, build, clock=lambda: now[0])
    for t in (1.0, 5.0, 10.5, 12.0, 19.0, 21.0):
        now[0] = t
        writer.at_step(steps=int(t))
    assert built == [10.5, 21.0]  # the first boundary after each period
    assert Session.load(tmp_path / "s.json")["config"]["checkpoint"]["steps"] == 21

    blocked = tmp_path / "file"
    blocked.write_text("")
    failing = Checkpointer(blocked / "s.json", 1.0, build, clock=lambda: now[0])
    assert failing.write(steps=1) is False and failing.write(steps=2) is False
    assert capsys.readouterr().err.count("checkpoint not written") == 1  # said once


def test_bad_period_and_atomic_write_keep_the_old_file_on_failure(tmp_path):
    with pytest.raises(ValueError, match="--checkpoint-every 0"):
        Checkpointer(tmp_path / "s.json", 0, lambda: None)
    target = tmp_path / "s.json"
    write_atomic(target, "old")

    with pytest.raises(TypeError):
        write_atomic(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left


def test_os_exit_in_the_script_leaves_a_checkpoint_of_its_steps(tmp_path):
    """os._exit skips every finally and atexit handler: the report was lost. Forked
    DataLoader workers also end with os._exit: they must not write."""
    tail = (
        "import os\n"
        "from torch.utils.data import DataLoader\n"
        "list(DataLoader(list(range(8)), num_workers=2))  # forked workers exit with os._exit\n"
        "os._exit(3)"
    )
    script = write_script(tmp_path, steps=6, sleep=0.0, tail=tail)
    out = tmp_path / "out"
    done = subprocess.run(
        command("run", "--warmup", "0", "--out", str(out), str(script)),
        cwd=tmp_path, env=environment(), capture_output=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr.decode()
    assert "os._exit(3)" in done.stderr.decode()
    session = Session.load(out / "session.json")
    assert session["config"]["incomplete"] is True  # a checkpoint, marked so
    assert len(session["steps"]) == 6


def test_a_script_that_changes_directory_writes_where_run_started(tmp_path):
    script = write_script(tmp_path, steps=3, sleep=0.0)
    (tmp_path / "elsewhere").mkdir()
    script.write_text("import os\nos.chdir('elsewhere')\n" + script.read_text())
    done = subprocess.run(
        command("run", "--warmup", "0", "--no-history", str(script.name)),
        cwd=tmp_path, env=environment(), capture_output=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    written = tmp_path / "torchdoctor-out"
    assert {"session.json", "report.md", "report.html"} <= {p.name for p in written.iterdir()}
    assert not (tmp_path / "elsewhere" / "torchdoctor-out").exists()
    assert "session written to torchdoctor-out/session.json" in done.stderr.decode()

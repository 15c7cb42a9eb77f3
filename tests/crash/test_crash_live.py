"""``--live`` in a pseudo-terminal: the summary appears on stderr, the script's output stays."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest
from crash_helpers import command, environment, write_script

from torchdoctor.collect.live import LiveView, summary_lines

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _read_all(fd: int, process: subprocess.Popen, timeout: float) -> str:
    """Everything written to the pty until the process ends (then what is left)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    else:
        process.kill()
        raise AssertionError("the run did not end in time")
    return ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def _run_in_pty(tmp_path, *, stdout_on_pty: bool) -> tuple[str, str, int]:
    script = write_script(tmp_path, steps=8, sleep=0.35)
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        command("run", "--live", "--checkpoint-every", "0", "--warmup", "0", "--out",
                str(tmp_path / "out"), str(script)),
        cwd=tmp_path, env=environment(TERM="xterm", COLUMNS="120"), stdin=subprocess.DEVNULL,
        stdout=secondary if stdout_on_pty else subprocess.PIPE, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    try:
        terminal = _read_all(primary, process, timeout=240)
        piped = process.stdout.read().decode() if process.stdout else ""
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(primary)
    return terminal, piped, process.returncode


@pytest.mark.parametrize("stdout_on_pty", [False, True], ids=["stdout-piped", "stdout-on-tty"])
def test_live_summary_renders_on_a_terminal_and_script_output_stays(tmp_path, stdout_on_pty):
    terminal, piped, code = _run_in_pty(tmp_path, stdout_on_pty=stdout_on_pty)
    assert code == 0, terminal
    # the live summary was drawn on stderr while the script ran, with its figures
    assert "torchdoctor live · train_loop.py" in terminal
    assert re.search(r"step time\s+\d", terminal), terminal
    assert "phases" in terminal and "Sequential.0" in terminal  # a top module (self time)
    assert "syncs" in terminal
    # the script's own lines are all there, where its stdout goes, each whole
    script_output = terminal if stdout_on_pty else piped
    for k in range(8):
        assert f"script line {k}" in script_output, script_output
    if not stdout_on_pty:  # a piped stdout gets the script's lines and the report, no display
        assert "torchdoctor live" not in piped
        assert piped.splitlines()[:8] == [f"script line {k}" for k in range(8)]


def test_live_view_redraws_at_most_once_per_interval():
    now = [0.0]

    class Figures:
        label = "x"
        warmup = 0

    view = LiveView(enabled=True, min_interval=1.0, clock=lambda: now[0])
    drawn = []
    view._live = type("Fake", (), {"update": lambda self, r, refresh: drawn.append(now[0])})()
    import torchdoctor.collect.live as live

    original = live.live_figures
    live.live_figures = lambda profiler, audit, started: {
        "label": "x", "steps": 1, "step_ms": 1.0, "last_ms": 1.0, "phases": {},
        "modules": [], "syncs_per_step": None, "elapsed_s": 0.0,
    }  # fmt: skip
    try:
        for t in (0.0, 0.3, 0.9, 1.0, 1.5, 2.2):
            now[0] = t
            view(Figures())
    finally:
        live.live_figures = original
    assert drawn == [0.0, 1.0, 2.2]
    assert summary_lines({"steps": 0, "elapsed_s": 1.0, "label": "x"})[1].startswith("waiting")


def test_live_figures_carry_the_share_of_time_the_loop_waited_for_a_core():
    import torch

    import torchdoctor
    from torchdoctor.collect.live import live_figures

    net = torch.nn.Linear(4, 4)
    with torchdoctor.Profiler(net, syncs=False) as prof:
        for _ in range(3):
            net(torch.ones(1, 4)).sum().backward()
            prof.step()
        figures = live_figures(prof)
    waited = figures["cpu_wait_share"]
    assert waited is None or 0.0 <= waited <= 1.0  # (None where the kernel gives no wait)
    if sys.platform == "linux":
        assert waited is not None

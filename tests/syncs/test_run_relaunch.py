"""`torchdoctor run` follows a script that starts itself again (Lightning's DDP launcher runs
ranks 1..n as `python script.py ...` with LOCAL_RANK set): each is profiled by a quiet
`torchdoctor run` of its own into OUT/children/<script>-<LOCAL_RANK>/, and when they are the
ranks of one process group the parent compares them with its own session as rank 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

RELAUNCH = """
import os, subprocess, sys
import torch
rank = int(os.environ.get("LOCAL_RANK", "0"))
if rank == 0:
    child = subprocess.Popen([sys.executable, os.path.abspath(sys.argv[0]), "--lr", "0.1"],
                             env=dict(os.environ, LOCAL_RANK="1"))
    other = subprocess.run([sys.executable, "-c", "print('not the script')"])  # not followed
if {ddp}:
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
    dist.init_process_group("gloo", rank=rank, world_size=2)
net = torch.nn.Linear(16, 16)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for _ in range(12):
    net(torch.randn(8, 16)).pow(2).mean().backward()
    if {ddp}:
        for p in net.parameters():
            dist.all_reduce(p.grad)
    opt.step(); opt.zero_grad()
if rank == 0:
    print("child exit", child.wait(), "argv", sys.argv[1:])
else:
    print("rank 1 argv", sys.argv[1:])
"""


def _run(tmp_path, ddp: bool):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(RELAUNCH.format(ddp=ddp, port=29500 + os.getpid() % 500)))
    return subprocess.run(
        [sys.executable, "-m", "torchdoctor", "run", "--no-history", "--out", "prof", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def test_a_script_started_again_by_itself_is_profiled_quietly_into_children(tmp_path):
    done = _run(tmp_path, ddp=False)
    assert done.returncode == 0, done.stderr
    assert "child exit 0 argv []" in done.stdout and "rank 1 argv ['--lr', '0.1']" in done.stdout
    assert done.stdout.count("torchdoctor report") == 1  # the child's run prints no report
    child = json.loads((tmp_path / "prof" / "children" / "train-1" / "session.json").read_text())
    assert len(child["steps"]) >= 8
    parent = json.loads((tmp_path / "prof" / "session.json").read_text())
    (entry,) = parent["children"]
    assert (entry["name"], entry["index"]) == ("train", 1)
    assert entry["out"] == str(tmp_path / "prof" / "children" / "train-1")
    assert entry["started_at"] <= entry["ended_at"] and entry["threads"] >= 1
    assert "child process train #1: " in done.stderr
    assert not (tmp_path / "prof" / "children" / "python-0").exists()  # `python -c` is not it


@pytest.mark.skipif(
    not __import__("torch").distributed.is_available(), reason="torch.distributed is missing"
)
def test_relaunched_ranks_are_compared_with_the_parent_as_rank_0(tmp_path):
    done = _run(tmp_path, ddp=True)
    assert done.returncode == 0, done.stderr
    ranks = json.loads((tmp_path / "prof" / "ranks.json").read_text())
    assert sorted(r["rank"] for r in ranks["ranks"]) == [0, 1], ranks.keys()

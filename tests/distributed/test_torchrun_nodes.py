"""`torchdoctor run` under torchrun as two nodes with separate --out folders (gloo, CPU).

Each node is a torchrun launch of one process (``--nnodes 2``, c10d rendezvous on 127.0.0.1).
Rank 0's merged report must cover rank 1, whose session only reaches node 0 through the process
group's store; a rank that fails or dies is named, and the other rank's data survives.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import torchdoctor

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)

SCRIPT = """\
import os
import time
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DDP(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(8):
    if rank == 1 and step == 5 and os.environ.get("FAIL") == "raise":
        raise RuntimeError("rank 1 lost its shard")
    if rank == 1 and step == 5 and os.environ.get("FAIL") == "die":
        os._exit(3)
    if rank == 1:
        time.sleep(0.02)  # rank 1 prepares its batch slowly
    x, y = torch.randn(16, 32), torch.randn(16, 1)
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    total = loss.detach().clone()
    dist.all_reduce(total)  # the logged loss, averaged over ranks
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)


def _two_nodes(tmp_path: Path, fail: str = "", wait_s: str = "60") -> dict[int, dict]:
    """Launch the two nodes; returns ``{rank: {"code", "out", "err", "root"}}`` (c10d ignores
    --node_rank: the folder holding rank0/ tells which node's process is rank 0)."""
    (tmp_path / "train.py").write_text(SCRIPT)
    port = _free_port()
    source = str(Path(torchdoctor.__file__).parents[1])  # this checkout, not an installed copy
    path = os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "FAIL": fail,
           "TORCHDOCTOR_RANK_WAIT_S": wait_s, "PYTHONPATH": path}  # fmt: skip
    nodes = []
    for node in (0, 1):
        # Node 0 hosts the rendezvous store (it binds the endpoint first, as the node named by
        # --rdzv_endpoint does) and becomes rank 0: c10d orders nodes by address (127.0.0.1 <
        # 127.0.0.2), then pid. So rank 1's node can fail without taking the store with it.
        if node == 1:
            _wait_for_port(port, nodes[0])
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                   "--node_rank", str(node), "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                   "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "td-test",
                   "--local_addr", f"127.0.0.{node + 1}", "-m", "torchdoctor", "run",
                   "--out", f"node{node}", "train.py"]  # fmt: skip
        nodes.append(subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    runs = {}
    try:
        for node, process in enumerate(nodes):
            out, err = process.communicate(timeout=150)
            root = tmp_path / f"node{node}"
            rank = 0 if (root / "rank0").is_dir() else 1
            runs[rank] = {"code": process.returncode, "out": out, "err": err, "root": root}
    finally:
        for process in nodes:
            if process.poll() is None:
                process.kill()
    assert sorted(runs) == [0, 1], {r: v["err"][-3000:] for r, v in runs.items()}
    return runs


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_node_zero_merges_rank_one_through_the_process_group_with_timed_collectives(tmp_path):
    runs = _two_nodes(tmp_path)
    assert runs[0]["code"] == 0 and runs[1]["code"] == 0, runs[0]["err"][-3000:]
    root0, root1 = runs[0]["root"], runs[1]["root"]
    assert not (root1 / "rank0").exists()  # separate folders: no shared files
    merged = _json(root0 / "ranks.json")
    assert [r["rank"] for r in merged["ranks"]] == [0, 1] and merged["missing"] == []
    assert (root0 / "rank1" / "session.json").exists()  # kept from the store
    for rank, root in ((0, root0), (1, root1)):
        section = _json(root / f"rank{rank}" / "session.json")["collectives"]
        rows = {(r["kind"], r["ddp_bucket"]): r for r in section["by_site"]}
        bucket, logged = rows[("all_reduce", True)], rows[("all_reduce", False)]
        assert bucket["calls_per_step"] >= 1 and bucket["bytes_per_call"] > 0
        assert logged["site"]["code"].startswith("dist.all_reduce(total)")
        assert logged["calls_per_step"] == 1.0 and logged["bytes_per_call"] == 4
        assert section["total_ms_per_step"] > 0 and 0 < section["share_pct"] <= 100
        assert section["ddp"][0]["timed"] and section["backend"] == "gloo"
    comm = merged["communication"]
    assert comm["matched_calls"] > 0 and comm["slowest"] is not None
    assert "communication: " in runs[0]["out"] and "comm ms" in runs[0]["out"]


def test_a_rank_that_raises_is_named_and_the_other_rank_keeps_its_data(tmp_path):
    runs = _two_nodes(tmp_path, fail="raise", wait_s="20")
    assert runs[1]["code"] != 0  # rank 1's exit code is the script's
    root0 = runs[0]["root"]
    assert (root0 / "ranks.json").exists(), runs[0]["out"][-3000:] + runs[0]["err"][-5000:]
    merged = _json(root0 / "ranks.json")
    rank0 = _json(root0 / "rank0" / "session.json")
    assert len(rank0["steps"]) >= 3 and rank0["collectives"]["by_site"]
    named = {f["rank"] for f in merged["stopped"]} | set(merged["missing"])
    assert 1 in named, merged
    assert "rank 1 did not finish" in runs[0]["out"] or "rank 1 is missing" in runs[0]["out"]


def test_a_rank_that_dies_is_named_missing(tmp_path):
    runs = _two_nodes(tmp_path, fail="die", wait_s="5")
    assert runs[1]["code"] != 0
    assert (runs[0]["root"] / "ranks.json").exists(), runs[0]["err"][-6000:]
    merged = _json(runs[0]["root"] / "ranks.json")
    assert merged["missing"] == [1] and [r["rank"] for r in merged["ranks"]] == [0]
    assert "rank 1 is missing" in runs[0]["out"]
    assert len(_json(runs[0]["root"] / "rank0" / "session.json")["steps"]) >= 3

"""FSDP2 (`fully_shard`) under `torchdoctor run` on CPU with gloo: module tree and collectives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchdoctor

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)

SCRIPT = """\
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

dist.init_process_group("gloo")
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
for layer in (model[0], model[2]):
    fully_shard(layer)
fully_shard(model)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(5):
    loss = nn.functional.mse_loss(model(torch.randn(16, 32)), torch.randn(16, 1))
    opt.zero_grad()
    loss.backward()
    opt.step()
dist.destroy_process_group()
"""


def test_fsdp2_sessions_carry_the_module_tree_and_per_module_collectives(tmp_path):
    (tmp_path / "fsdp.py").write_text(SCRIPT)
    source = str(Path(torchdoctor.__file__).parents[1])
    path = os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "torchdoctor", "run", "--out", "prof", "fsdp.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=150, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        session = json.loads((tmp_path / "prof" / f"rank{rank}" / "session.json").read_text())
        (top,) = [c for c in session["tree"]["children"] if c["kind"] == "module"]
        assert top["type"] == "FSDPSequential"
        assert {c["path"].rsplit(".", 1)[-1] for c in top["children"]} >= {"0", "2"}
        rows = session["collectives"]["by_site"]
        gathers = {r["module"] for r in rows if r["kind"] == "all_gather" and
                   r["phase"] == "forward"}  # fmt: skip
        assert {m.rsplit(".", 1)[-1] for m in gathers} == {"0", "2"}  # one per sharded layer
        assert any(r["kind"] == "reduce_scatter" and r["phase"] == "backward" for r in rows)
        assert session["collectives"]["share_pct"] > 0
    result = json.loads((tmp_path / "prof" / "ranks.json").read_text())
    assert result["communication"]["matched_calls"] > 0

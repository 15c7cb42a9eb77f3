"""`torchdoctor run` under torchrun: a session per rank, and rank 0 names the straggler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchdoctor.analyze.ranks import compare_ranks
from torchdoctor.cli import main
from torchdoctor.commands.ranks import compare_rank_sessions, distributed_rank

DDP_SCRIPT = """\
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
for step in range(10):
    if rank == 1:
        time.sleep(0.03)  # rank 1 prepares its batch slowly
    x, y = torch.randn(16, 32), torch.randn(16, 1)
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
dist.destroy_process_group()
"""


def _session(rank: int, world: int, data: float, forward: float, backward: float) -> dict:
    phases = {"data": data, "forward": forward, "backward": backward, "optimizer": 0.5,
              "other": 0.0}  # fmt: skip
    return {
        "environment": {"rank": rank, "world_size": world},
        "step_ms": {"median": sum(phases.values())},
        "phases": {p: {"median": v} for p, v in phases.items()},
        "steps": [{}] * 5,
        "syncs": [{"per_step": 1.0}],
    }


def test_distributed_rank_reads_torchrun_variables():
    assert distributed_rank({"RANK": "3", "WORLD_SIZE": "4"}) == (3, 4)
    assert distributed_rank({"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process
    assert distributed_rank({"RANK": "x", "WORLD_SIZE": "2"}) is None
    assert distributed_rank({}) is None


def test_compare_ranks_names_the_rank_that_works_longer_before_the_all_reduce():
    # rank 2 loads slowly; ranks 0 and 1 wait for it inside backward: equal step times
    sessions = [_session(0, 3, 1, 5, 24), _session(1, 3, 1, 5, 24), _session(2, 3, 19, 5, 6)]
    result = compare_ranks(sessions)
    assert result["straggler"] == 2 and result["phase"] == "data"
    assert result["excess_ms"] == pytest.approx(18.0)
    assert "rank 2 is the straggler" in result["verdict"]
    balanced = compare_ranks([_session(0, 2, 1, 5, 20), _session(1, 2, 1.2, 5, 19.8)])
    assert balanced["straggler"] is None and "no straggler" in balanced["verdict"]
    partial = compare_ranks([_session(0, 4, 1, 5, 20), _session(1, 4, 1, 5, 20)])
    assert "2 of 4 ranks wrote no session" in partial["verdict"]
    crashed = _session(2, 3, 0, 0, 0)
    crashed["steps"] = []  # died before its first step: not the "fastest" rank
    with_crash = compare_ranks([_session(0, 3, 1, 5, 20), _session(1, 3, 9, 5, 12), crashed])
    assert with_crash["straggler"] == 1 and "ranks [2] recorded no step" in with_crash["verdict"]
    alone = compare_ranks([_session(0, 2, 1, 5, 20), crashed])
    assert alone["straggler"] is None and "nothing to compare" in alone["verdict"]
    with pytest.raises(ValueError, match="no sessions"):
        compare_ranks([])


def _stepped(rank: int, light_ms: float, detailed: list[dict]) -> dict:
    """A rank whose session step time is the median of mostly light steps (fast: no module
    hooks, no forward phase) and whose phases come from slower detailed steps."""
    light = {"wall_ms": light_ms, "phases": {"backward": light_ms / 2, "other": light_ms / 2},
             "detailed": False}  # fmt: skip
    steps = [*detailed, *[light] * 20]
    return {
        "environment": {"rank": rank, "world_size": 2},
        "step_ms": {"median": light_ms},
        "phases": {
            p: {"median": detailed[0]["phases"].get(p, 0.0)}
            for p in ("data", "forward", "backward", "optimizer", "other")
        },  # fmt: skip
        "steps": steps,
    }


def test_busy_time_and_phases_come_from_the_detailed_steps_alone():
    """On small steps the detailed ones are much slower than the median of all steps: busy
    = step - backward mixed the two (both ranks came out 0 busy: 'no straggler')."""

    def detailed(forward, other, backward):
        return {"wall_ms": forward + other + backward, "detailed": True,
                "phases": {"forward": forward, "other": other, "backward": backward}}  # fmt: skip

    waits = _stepped(0, 2.0, [detailed(0.4, 0.5, 3.9)] * 5)  # waits in backward
    slow = _stepped(1, 2.1, [detailed(0.45, 2.4, 2.0)] * 5)  # does more before it
    result = compare_ranks([waits, slow])
    assert result["straggler"] == 1 and result["phase"] == "other"
    assert result["excess_ms"] == pytest.approx(2.85 - 0.9)
    rows = {row["rank"]: row for row in result["ranks"]}
    assert rows[1]["phases"]["forward"] == pytest.approx(0.45)  # not the light steps' 0
    assert result["excess_pct"] == pytest.approx(100 * 1.95 / 4.85)  # of a detailed step


def _write(root: Path, rank: int, session: dict, age_s: float = 0.0) -> None:
    from torchdoctor.session import Session

    data = Session.new("train.py").to_dict()
    data.update(session)
    full = Session(data)
    path = root / f"rank{rank}" / "session.json"
    path.parent.mkdir(parents=True)
    full.save(path)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))


def test_rank_files_of_an_earlier_run_are_not_compared(tmp_path, capsys):
    _write(tmp_path, 0, _session(0, 2, 1, 5, 20))
    _write(tmp_path, 1, _session(1, 2, 15, 5, 6), age_s=3600)  # left over from another run
    alone = compare_rank_sessions(str(tmp_path), 2, since=time.time() - 1, wait_s=0.3)
    assert alone["missing"] == [1] and alone["straggler"] is None
    captured = capsys.readouterr()
    assert "only 1 of 2 ranks" in captured.err and "rank 1 is missing" in captured.out
    result = compare_rank_sessions(str(tmp_path), 2, since=None, wait_s=0)  # `ranks` command
    assert result["straggler"] == 1
    assert (tmp_path / "ranks.md").exists() and json.loads((tmp_path / "ranks.json").read_text())


def test_a_bad_wait_setting_is_reported_and_the_default_used(monkeypatch, capsys):
    from torchdoctor.commands.ranks import RANK_WAIT_S, _wait_from_environment

    monkeypatch.setenv("TORCHDOCTOR_RANK_WAIT_S", "1O")
    assert _wait_from_environment() == RANK_WAIT_S
    assert "TORCHDOCTOR_RANK_WAIT_S='1O' is not a number" in capsys.readouterr().err
    monkeypatch.setenv("TORCHDOCTOR_RANK_WAIT_S", "2.5")
    assert _wait_from_environment() == 2.5


def test_rank_comparison_for_json_output_is_written_but_not_printed(tmp_path, capsys):
    _write(tmp_path, 0, _session(0, 2, 1, 5, 20))
    _write(tmp_path, 1, _session(1, 2, 15, 5, 6))
    result = compare_rank_sessions(str(tmp_path), 2, wait_s=0, show=False)
    captured = capsys.readouterr()
    assert captured.out == "" and "rank 1 is the straggler" in captured.err
    assert json.loads((tmp_path / "ranks.json").read_text())["straggler"] == result["straggler"]


def test_ranks_command_prints_the_table_and_rejects_a_directory_without_ranks(tmp_path, capsys):
    _write(tmp_path, 0, _session(0, 2, 1, 5, 20))
    _write(tmp_path, 1, _session(1, 2, 15, 5, 6))
    assert main(["ranks", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 *" in out and "rank 1 is the straggler" in out
    assert main(["ranks", str(tmp_path / "rank0")]) == 2
    assert "needs two or more" in capsys.readouterr().err


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)
def test_torchrun_ddp_run_writes_one_session_per_rank_and_names_the_straggler(tmp_path):
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    import torchdoctor

    source = str(Path(torchdoctor.__file__).parents[1])  # this checkout, not an installed copy
    path = os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "torchdoctor", "run", "--out", "prof", "ddp.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        session = json.loads((tmp_path / "prof" / f"rank{rank}" / "session.json").read_text())
        assert session["environment"]["rank"] == rank
        assert session["environment"]["world_size"] == 2
        assert session["config"]["step_boundary"] == "optimizer"
    assert done.stdout.count("torchdoctor report") == 1  # rank 0 prints, rank 1 does not
    assert "rank 1 is the straggler" in done.stdout, done.stdout[-2000:]
    result = json.loads((tmp_path / "prof" / "ranks.json").read_text())
    assert result["straggler"] == 1
    by_rank = {row["rank"]: row for row in result["ranks"]}
    assert by_rank[0]["phases"]["backward"] > by_rank[1]["phases"]["backward"]  # rank 0 waits

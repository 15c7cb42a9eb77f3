"""`torchdoctor run` follows the processes a script starts (a Hogwild trainer, mp.spawn): each
is profiled on its own into OUT/children/<target>-<k>/, and the parent's report says where."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def torch_distributed_gloo() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()

HOGWILD = """
import sys
import torch
import torch.multiprocessing as mp
from torch import nn

def train(rank, model, steps, fail):
    torch.manual_seed(rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 8)).pow(2).mean().backward()
        opt.step()
    if fail and rank == 1:
        raise RuntimeError("worker 1 broke")

if __name__ == "__main__":
    mp.set_start_method("{method}", force=True)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    model.share_memory()
    workers = [mp.Process(target=train, args=(rank, model, 12, {fail}))
               for rank in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("exit codes", [w.exitcode for w in workers])
"""

SPAWN = """
import torch
import torch.multiprocessing as mp

def work(index, steps):
    net = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(steps):
        net(torch.randn(2, 4)).sum().backward()
        opt.step()

if __name__ == "__main__":
    mp.spawn(work, args=(10,), nprocs=2)
"""


DDP = """
import os
import torch
import torch.multiprocessing as mp
from torch.distributed import init_process_group, destroy_process_group  # bound at import
from torch.nn.parallel import DistributedDataParallel as DDP

def main(rank, world_size, steps):
    init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(rank)
    model = DDP(torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 16)).pow(2).mean().backward()
        opt.step()
    destroy_process_group()

if __name__ == "__main__":
    mp.spawn(main, args=(2, 12), nprocs=2)
"""


def _run(tmp_path: Path, source: str, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "torchdoctor", "run", "--out", "prof", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )  # fmt: skip


def _child(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "prof" / "children" / name / "session.json").read_text())


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_each_hogwild_worker_gets_its_own_profile(tmp_path, method):
    cores = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    done = _run(tmp_path, HOGWILD.format(method=method, fail=False), OMP_NUM_THREADS=cores)
    assert done.returncode == 0, done.stderr
    assert "exit codes [0, 0]" in done.stdout
    for index in (0, 1):
        child = _child(tmp_path, f"train-{index}")
        assert child["config"]["step_boundary"] == "optimizer"
        assert len(child["steps"]) == 11  # 12 optimizer steps, 1 of warm-up
        assert child["tree"]["children"] and "(train #" in child["label"]
        assert (tmp_path / "prof" / "children" / f"train-{index}" / "report.md").exists()
        assert f"child process train #{index}: 11 step(s)" in done.stderr
    parent = json.loads((tmp_path / "prof" / "session.json").read_text())
    assert [c["name"] for c in parent["children"]] == ["train", "train"]
    assert any("were profiled on their own" in n for n in parent["config"]["notes"])
    # both ran at once with as many threads as the cores (OMP_NUM_THREADS below): twice too many
    cores = parent["environment"]["cpus"]
    assert all(c["threads"] == cores and c["started_at"] < c["ended_at"] for c in parent["children"])
    (advice,) = [a for a in parent["advice"] if a["rule"] == "cpu-oversubscription"]
    assert advice["title"] == (
        f"2 train processes ran {cores} intra-op threads each on {cores} cores: "
        f"give each {max(1, cores // 2)}"
    )
    assert f"torch.set_num_threads({max(1, cores // 2)})" in advice["fix"]
    # each worker saw the other (it shares the cores: the data and contention advice count it)
    assert any(_child(tmp_path, f"train-{i}")["environment"].get("sibling_processes") == 1
               for i in (0, 1))  # fmt: skip
    # the main process only waited: its children's work leads the printed report
    assert "most of this run's work ran in 2 child process(es)" in done.stdout.split(
        "torchdoctor report")[0]


def test_a_failing_worker_keeps_its_exit_code_and_its_profile_says_why(tmp_path):
    done = _run(tmp_path, HOGWILD.format(method="spawn", fail=True))
    assert "exit codes [0, 1]" in done.stdout, done.stderr
    assert "worker 1 broke" in done.stderr  # the child's own traceback, as without torchdoctor
    broken = _child(tmp_path, "train-1")
    assert "worker 1 broke" in (broken.get("error") or "")
    assert len(broken["steps"]) == 11


def test_mp_spawn_children_are_named_by_the_function_they_run(tmp_path):
    done = _run(tmp_path, SPAWN)
    assert done.returncode == 0, done.stderr
    for index in (0, 1):
        assert len(_child(tmp_path, f"work-{index}")["steps"]) == 9


@pytest.mark.skipif(not torch_distributed_gloo(), reason="needs torch.distributed gloo")
def test_mp_spawned_ddp_ranks_are_compared_as_torchrun_ranks_are(tmp_path):
    import socket

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _run(tmp_path, DDP, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        child = _child(tmp_path, f"main-{rank}")
        assert child["environment"]["rank"] == rank and child["environment"]["world_size"] == 2
        assert child["collectives"]["ddp"]  # its gradient buckets were timed
    comparison = json.loads((tmp_path / "prof" / "ranks.json").read_text())
    assert sorted(row["rank"] for row in comparison["ranks"]) == [0, 1]
    assert "busy = detailed - backward" in done.stdout  # the ranks table, after the report


POOL = """
import multiprocessing
import torch

def square(x):
    return float(torch.tensor(x) ** 2)

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        print("sum", sum(pool.map(square, range(8))))
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(4):
        net(torch.ones(1, 2)).sum().backward()
        opt.step()
"""


def test_process_pool_workers_are_counted_not_followed(tmp_path):
    """A multiprocessing.Pool's workers are long-lived loops the pool terminates: profiling
    them would cost every task and leave empty sessions behind."""
    done = _run(tmp_path, POOL)
    assert done.returncode == 0, done.stderr
    assert "sum 140.0" in done.stdout
    assert not (tmp_path / "prof" / "children").exists()
    parent = json.loads((tmp_path / "prof" / "session.json").read_text())
    assert "children" not in parent
    assert any("worker x2" in note for note in parent["config"]["notes"])

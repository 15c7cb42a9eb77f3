"""`torchdoctor.profile` and `Profiler` from a notebook cell (code compiled as IPython does)."""

from __future__ import annotations

import importlib.util

import pytest

from torchdoctor.history import list_runs

CELL_1 = """
import torch, torchdoctor
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
x = torch.randn(4, 8)
def train_step():
    opt.zero_grad()
    net(x).sum().backward()
    opt.step()
session = torchdoctor.profile(train_step, model=net, steps=3, warmup=1, syncs=False)
"""
CELL_2 = """
with torchdoctor.Profiler(net, syncs=False) as prof:
    for batch in prof.wrap_loader([torch.randn(4, 8)] * 4):
        with torchdoctor.region("loss"):
            loss = net(batch).sum()
        loss.backward()
        prof.step()
"""


def _run_cells(namespace, *cells):
    for number, cell in enumerate(cells, 1):
        # IPython compiles each cell under a pseudo file name that does not exist on disk
        exec(compile(cell, f"<ipython-input-{number}-0123456789ab>", "exec"), namespace)


def test_profile_and_profiler_from_cells(history_file):
    namespace: dict = {"__name__": "__main__"}
    _run_cells(namespace, CELL_1, CELL_2)
    session, prof = namespace["session"], namespace["prof"]
    assert len(session["steps"]) == 3
    assert [c["path"] for c in session["tree"]["children"]][:1] == ["Sequential"]
    assert "Sequential" in session.tree()
    assert len(prof.session["steps"]) == 4
    regions = [c for c in prof.session["tree"]["children"] if c["kind"] == "region"]
    assert [r["name"] for r in regions] == ["loss"]
    assert prof.session["phases"]["data"]["median"] > 0
    (row,) = list_runs(history_file)  # profile() is recorded; a cell is no script
    assert row["kind"] == "profile" and row["script"] is None and row["git_commit"] is None


@pytest.mark.skipif(importlib.util.find_spec("IPython") is None, reason="IPython not installed")
def test_profile_in_an_ipython_shell():  # (IPython: a dev extra, so `make test` runs this)
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    result = shell.run_cell(CELL_1)
    assert result.success, result.error_in_exec
    assert len(shell.user_ns["session"]["steps"]) == 3

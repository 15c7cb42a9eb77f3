"""Rule worker-respawn: a DataLoader's workers started again at every epoch, measured from the
epochs' first steps (analyze/advice/worker_respawn.py), and the starts the profiler notes."""

from __future__ import annotations

import pytest
import torch
from reports_sessions_crafted import respawn_session
from torch.utils.data import DataLoader, TensorDataset

import torchdoctor
from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.worker_respawn import respawn_cost, worker_respawn


def test_the_epochs_first_steps_excess_is_the_measured_saving():
    (item,) = worker_respawn(respawn_session())
    # 4 restarts measured, 98 ms each over the 2 ms median, among 40 steps
    assert item.estimated_saving_ms == pytest.approx(4 * 98.0 / 40)
    assert item.cause == "dataloader-workers" and item.confidence == "high"
    assert "persistent_workers=True" in item.fix and "train.py:12" in item.title


def test_the_first_epochs_start_is_no_restart_unless_it_began_in_the_warm_up():
    session = respawn_session(starts=(0, 8, 16), iterators=3)  # the first epoch was profiled
    steps = session["steps"]
    for step in steps:
        step["phases"]["data"] = 100.0 if step["index"] in (0, 8, 16) else 2.0
    cost = respawn_cost(session, session["environment"]["data_loaders"][0])
    assert cost["restarts"] == 2  # (persistent workers start once too: step 0 is not saved)
    warm = respawn_cost(session, {**session["environment"]["data_loaders"][0], "iterators": 4})
    assert warm["restarts"] == 3  # the first iterator began in the warm-up: all are restarts


@pytest.mark.parametrize("change", ["persistent", "no_workers", "flat", "one_start"])
def test_silent_when_nothing_restarts_or_nothing_is_measured(change):
    session = respawn_session(persistent=change == "persistent")
    loader = session["environment"]["data_loaders"][0]
    if change == "no_workers":
        loader["num_workers"] = 0
    if change == "flat":  # restarts that cost nothing measurable
        for step in session["steps"]:
            step["phases"]["data"] = 2.0
    if change == "one_start":  # one iterator, begun in the profiled steps: no restart
        loader.update(starts=[7], iterators=1)
    assert worker_respawn(session) == []


def test_it_joins_the_linters_td403_and_the_data_phase_advice_as_one():
    session = respawn_session()
    session["lint"] = [{"code": "TD403", "severity": "info", "path": "/w/train.py", "line": 12,
                        "message": "DataLoader with workers but without persistent_workers"}]
    found = [a for a in advise(session) if a.cause == "dataloader-workers"]
    assert len(found) == 1 and found[0].rule == "worker-respawn"
    assert found[0].estimated_saving_ms == pytest.approx(9.8)
    assert any("TD403" in r for r in found[0].references)


def test_the_profiler_notes_the_step_each_new_iterator_began_in():
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(12, 4)), batch_size=4)  # 3 batches an epoch
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(syncs=False, warmup=1) as prof:
        for _ in range(4):
            for (x,) in loader:
                net(x).sum().backward()
                opt.step()
                opt.zero_grad()
                prof.step()
    (entry,) = prof.session["environment"]["data_loaders"]
    # epochs begin at steps 0, 3, 6, 9; the first is the warm-up step: the kept steps' 2, 5, 8
    assert entry["iterators"] == 4 and entry["starts"] == [2, 5, 8]

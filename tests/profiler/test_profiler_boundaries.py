"""Step boundaries (manual, auto: markers > optimizer > backward > module > whole run) and the
data phase of a wrapped loader."""

import time

import pytest
import torch
from torch import nn

import torchdoctor


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def _batches(n):
    return [torch.randn(3, 4) for _ in range(n)]


def test_manual_steps_with_wrapped_loader_count_data_phase(net):
    def slow_loader():
        for batch in _batches(3):
            time.sleep(0.002)  # sleep never returns early: at least 2 ms of data wait per step
            yield batch

    with torchdoctor.Profiler(net, syncs=False) as prof:
        for batch in prof.wrap_loader(slow_loader()):
            net(batch).sum().backward()
            prof.step()
    s = prof.session
    assert s["config"]["step_boundary"] == "marker"
    assert len(s["steps"]) == 3
    for step in s["steps"]:
        assert step["phases"]["data"] >= 2.0
        assert step["phases"]["forward"] > 0 and step["phases"]["backward"] > 0
        assert sum(step["phases"].values()) == pytest.approx(step["wall_ms"], rel=1e-6)


def test_auto_optimizer_steps(net):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto", warmup=1) as prof:
        for batch in _batches(4):
            opt.zero_grad()
            net(batch).sum().backward()
            opt.step()
    s = prof.session
    assert s["config"]["step_boundary"] == "optimizer"
    assert len(s["steps"]) == 3  # 4 optimizer steps, 1 warm-up
    assert all(step["phases"]["optimizer"] > 0 for step in s["steps"])


def test_auto_lbfgs_closure_counts_forward_and_backward(net):
    opt = torch.optim.LBFGS(net.parameters(), max_iter=2)
    batch = torch.randn(3, 4)

    def closure():
        opt.zero_grad()
        loss = net(batch).pow(2).mean()
        loss.backward()
        return loss

    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto") as prof:
        for _ in range(2):
            opt.step(closure)
    s = prof.session
    assert s["config"]["step_boundary"] == "optimizer"
    assert len(s["steps"]) == 2
    for step in s["steps"]:
        assert step["phases"]["forward"] > 0 and step["phases"]["backward"] > 0
        assert step["phases"]["optimizer"] > 0


def test_auto_backward_without_optimizer(net):
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto") as prof:
        for batch in _batches(5):
            net(batch).sum().backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.01 * p.grad
                    p.grad = None
    s = prof.session
    assert s["config"]["step_boundary"] == "backward"
    assert len(s["steps"]) == 3  # iterations 1-2, run while deciding, are dropped
    assert any("backward" in note for note in s["config"]["notes"])


def test_auto_inference_loop_uses_module_calls(net):
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto") as prof:
        with torch.no_grad():
            for batch in _batches(5):
                net(batch)
    s = prof.session
    assert s["config"]["step_boundary"] == "module"
    assert len(s["steps"]) == 3  # 5 calls: first dropped while deciding, last one is partial
    assert s["tree"]["children"][0]["backward_ms"]["max"] == 0.0


def test_auto_markers_win(net):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, step_boundary="auto") as prof:
        for batch in _batches(3):
            for _ in range(2):  # two optimizer steps per marked step
                opt.zero_grad()
                net(batch).sum().backward()
                opt.step()
            torchdoctor.step()
    s = prof.session
    assert s["config"]["step_boundary"] == "marker"
    assert len(s["steps"]) == 2  # the first marked step began mid-way (at an optimizer step)
    assert s["tree"]["children"][0]["calls_per_step"] == 2.0


def test_no_boundary_is_one_whole_run_step(net):
    with torchdoctor.Profiler(net, syncs=False) as prof:
        net(torch.randn(3, 4))
    s = prof.session
    assert s["config"]["step_boundary"] == "whole_run"
    assert len(s["steps"]) == 1

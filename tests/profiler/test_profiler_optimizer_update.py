"""steps[i].update_ms: the optimizers' own updates, apart from the closure optimizer.step()
runs first (Lightning runs its training step and bookkeeping in it)."""

from __future__ import annotations

import time

import torch

import torchdoctor


def _train(closure_kw: bool):
    net = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def closure():
        opt.zero_grad()
        loss = net(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        time.sleep(0.004)  # the framework's bookkeeping after backward
        return loss

    with torchdoctor.Profiler(net, syncs=False, warmup=1, step_boundary="auto") as prof:
        for _ in range(6):
            loss = opt.step(closure=closure) if closure_kw else opt.step(closure)
            assert torch.is_tensor(loss)  # (the closure's result comes back)
    return prof.session


def test_the_update_is_timed_from_the_closures_end():
    for keyword in (True, False):
        steps = _train(keyword)["steps"]
        assert len(steps) == 5 and all(0 < s["update_ms"] < 4.0 for s in steps)
        assert all(s["phases"]["optimizer"] >= 4.0 for s in steps)  # (the sleep is in it)


def _train_without_closure():
    """Four Adam steps of a linear layer, ``opt.step()`` with no closure: the session."""
    net = torch.nn.Linear(8, 8)
    opt = torch.optim.Adam(net.parameters())
    with torchdoctor.Profiler(net, syncs=False, warmup=1, step_boundary="auto") as prof:
        for _ in range(4):
            net(torch.randn(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
    return prof.session


def test_without_a_closure_the_whole_step_is_the_update():
    steps = _train_without_closure()["steps"]
    assert all(s["update_ms"] <= s["phases"]["optimizer"] + 1e-6 for s in steps)


def test_the_fused_advice_is_sized_on_the_update():
    from torchdoctor.analyze.advice.optimizer_step import optimizer_step

    session = {"step_ms": {"median": 10.0, "mean": 10.0},
               "phases": {"optimizer": {"median": 3.0, "mean": 3.0}},
               "environment": {"device": "cpu", "optimizers": [
                   {"type": "Adam", "fused_supported": True, "fused": False, "numel": 10**6}]},
               "steps": [{"detailed": True, "wall_ms": 10.0, "update_ms": 1.0, "closure": True,
                          "phases": {"optimizer": 3.0}}] * 6}  # fmt: skip
    (item,) = optimizer_step(session)
    assert item.evidence[0].startswith("the optimizer's own update is 1 ms per step")
    no_update = {**session, "steps": [{**s, "update_ms": None} for s in session["steps"]]}
    (whole,) = optimizer_step(no_update)
    assert whole.estimated_saving_ms > 2.5 * item.estimated_saving_ms


def test_a_step_records_that_a_closure_ran_and_only_then_is_told_so():
    """pytorch-tabnet calls optimizer.step() with no closure; its detailed optimizer phase, longer
    than the update by the profiler's timers, was read as "optimizer.step() runs its closure
    first"."""
    from torchdoctor.analyze.advice.optimizer_step import optimizer_step

    assert all(s.get("closure") is True for s in _train(True)["steps"])
    assert not any("closure" in s for s in _train_without_closure()["steps"])
    optimizers = [{"type": "Adam", "fused_supported": True, "fused": False, "numel": 10**6}]
    steps = [{"detailed": True, "wall_ms": 10.0, "update_ms": 1.0, "phases": {"optimizer": 3.0}}]
    session = {"step_ms": {"median": 10.0, "mean": 10.0},
               "phases": {"optimizer": {"median": 3.0, "mean": 3.0}},
               "environment": {"device": "cpu", "optimizers": optimizers}, "steps": steps * 6}
    (plain,) = optimizer_step(session)
    assert "closure" not in plain.evidence[0] and "1 ms per step" in plain.evidence[0]
    (closure,) = optimizer_step({**session, "steps": [{**steps[0], "closure": True}] * 6})
    assert "runs its closure first" in closure.evidence[0]

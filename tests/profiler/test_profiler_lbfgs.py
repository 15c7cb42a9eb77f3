"""torch.optim.LBFGS on a small model (a PINN, a curve fit): its own bookkeeping (a two-loop
recursion over history_size pairs, each iteration) was most of the step, and the report said
"No rule found a problem worth fixing"; a big model's closure dominates and is left alone."""

from __future__ import annotations

import torch
from profiler_helpers import sine_fit

import torchdoctor
from torchdoctor.analyze.advice.lbfgs import lbfgs_bookkeeping


def _fit(width: int, rows: int, history: int, steps: int = 12):
    net, closure = sine_fit(width, rows)
    opt = torch.optim.LBFGS(net.parameters(), lr=0.5, max_iter=10, history_size=history)
    with torchdoctor.Profiler(syncs=False, hot_lines=False, window=3, step_boundary="auto") as prof:
        for _ in range(steps):
            opt.step(closure)
    return prof.session


def test_lbfgs_bookkeeping_on_a_small_model_is_told_a_smaller_history():
    session = _fit(width=16, rows=64, history=100)
    (settings,) = session["environment"]["optimizers"]
    assert (settings["type"], settings["history_size"], settings["max_iter"]) == ("LBFGS", 100, 10)
    (item,) = lbfgs_bookkeeping(session)
    assert item.title.startswith("LBFGS's own work takes")
    assert "history_size=100, max_iter=10" in item.evidence[1] and "history_size=10" in item.code


def test_a_closure_that_is_the_step_is_left_alone():
    session = _fit(width=256, rows=1024, history=2, steps=8)
    assert lbfgs_bookkeeping(session) == []
    assert lbfgs_bookkeeping({**session, "environment": {"optimizers": [
        {"type": "Adam"}]}}) == []  # fmt: skip


def test_a_short_history_already_is_left_alone():
    session = {"step_ms": {"median": 30.0}, "phases": {"forward": {"median": 5.0},
               "optimizer": {"median": 20.0}}, "environment": {"optimizers": [
               {"type": "LBFGS", "history_size": 10, "max_iter": 20}]}}  # fmt: skip
    assert lbfgs_bookkeeping(session) == []
    session["environment"]["optimizers"][0]["history_size"] = 50
    assert len(lbfgs_bookkeeping(session)) == 1

"""A run that changes optimizer partway (DeepXDE's PINN recipe: Adam, then L-BFGS): the few
long L-BFGS steps were told as periodic work ("8 of 764 steps take 2.1x to 137x the median:
... an evaluation, a checkpoint"), and lbfgs-bookkeeping, reading the Adam steps' phases,
stayed silent while L-BFGS's own work was half of its stage. Steps now record the class they
stepped where the run stepped several; a run with one class records none."""

from __future__ import annotations

import torch
from profiler_helpers import sine_fit

import torchdoctor
from torchdoctor.analyze.advice.lbfgs import lbfgs_bookkeeping
from torchdoctor.analyze.advice.optimizer_stages import stage_steps
from torchdoctor.analyze.advice.periodic_steps import long_steps


def _fit(lbfgs_steps: int):
    net, closure = sine_fit(16, 512)
    with torchdoctor.Profiler(syncs=False, hot_lines=False, detail="always",
                              step_boundary="auto") as prof:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(30):
            opt.step(closure)
        opt = torch.optim.LBFGS(net.parameters(), lr=0.5, max_iter=20, history_size=100,
                                tolerance_grad=0.0, tolerance_change=0.0)  # fmt: skip
        for _ in range(lbfgs_steps):
            opt.step(closure)
    return prof.session


def test_an_lbfgs_stage_after_adam_is_a_stage_and_its_own_work_is_told():
    session = _fit(lbfgs_steps=3)
    kinds = [s.get("optimizer") for s in session["steps"]]
    assert kinds[-3:] == ["LBFGS"] * 3 and set(kinds[:-3]) == {"Adam"}
    assert [s["optimizer"] for s in stage_steps(session)] == kinds[:-3]
    found = long_steps(session)  # (the L-BFGS steps, 20 closures each, are no periodic work)
    assert found is None or not [s for s in found.long if s.get("optimizer") == "LBFGS"]
    (item,) = lbfgs_bookkeeping(session)
    assert item.evidence[0].startswith("the run's L-BFGS stage, steps ")
    assert "after Adam's" in item.evidence[0] and "history_size=100" in item.evidence[2]


def test_one_class_of_optimizer_records_none():
    session = _fit(lbfgs_steps=0)
    assert not [s for s in session["steps"] if "optimizer" in s]
    assert stage_steps(session) == session["steps"]


def test_without_the_steps_classes_the_long_steps_are_told_as_before():
    steps = [{"index": i, "wall_ms": 10.0, "detailed": False, "phases": {"other": 1.0}}
             for i in range(40)]  # fmt: skip
    steps += [{"index": 40 + i, "wall_ms": 900.0, "detailed": False, "phases": {"other": 1.0},
               "optimizer": "LBFGS"} for i in range(3)]  # fmt: skip
    unmarked = [{k: v for k, v in s.items() if k != "optimizer"} for s in steps]
    assert len(long_steps({"steps": unmarked}).long) == 3  # (near miss: one class, one stage)
    for s in steps[:40]:
        s["optimizer"] = "Adam"
    assert long_steps({"steps": steps}).long == []


def test_lbfgs_reads_reached_through_a_package_are_not_the_packages():
    """DeepXDE's train_step calls self.opt.step(closure): LBFGS's line search reads the loss on
    the host, and library-syncs read 'deepxde syncs 4.76 times per step inside its own code:
    find the package option behind it'; a read in the package's own code is still its."""
    from torchdoctor.analyze.advice.library_syncs import library_syncs

    row = {"kind": "bool", "op": "self.opt.step(closure)", "file": "/s/deepxde/model.py",
           "line": 401, "per_step": 2.6, "phase": "optimizer", "library": "deepxde",
           "user_file": "/w/Burgers.py", "user_line": 52, "inside": "optim/lbfgs.py:step"}
    session = {"syncs": [row], "step_ms": {"median": 10.0}}
    assert library_syncs(session) == []
    own = {**row, "inside": None, "op": "if loss > best:", "phase": "forward"}
    assert len(library_syncs({**session, "syncs": [own]})) == 1  # (near miss)

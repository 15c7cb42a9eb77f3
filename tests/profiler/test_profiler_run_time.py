"""config.run_time: where a run's time went, the profiled steps' share of it."""

from __future__ import annotations

import time

import pytest
import torch

import torchdoctor
from torchdoctor.render.tree import render_tree_text


def test_the_run_time_splits_into_start_up_steps_and_the_tail():
    net = torch.nn.Linear(4, 4)
    with torchdoctor.Profiler(net, syncs=False, warmup=1) as prof:
        time.sleep(0.3)  # start-up, in the warm-up step (it ends at the first boundary)
        for _ in range(5):
            net(torch.ones(2, 4)).sum().backward()
            prof.step()
        time.sleep(0.2)  # after the last step
    run = prof.session["config"]["run_time"]
    assert run["total_ms"] == pytest.approx(run["steps_ms"] + run["before_ms"] + run["after_ms"])
    assert run["before_ms"] >= 300 and run["after_ms"] >= 200
    assert run["steps_ms"] == pytest.approx(sum(s["wall_ms"] for s in prof.session["steps"]))


def test_the_report_says_so_when_the_steps_are_a_minority_of_the_run():
    session = torchdoctor.Session.new("t", with_environment=False)
    session["tree"] = {"kind": "root", "path": "", "name": "t", "children": [],
                       "total_ms": {"median": 1.0}}  # fmt: skip
    session["config"] = {"run_time": {"total_ms": 7800.0, "steps_ms": 960.0,
                                      "before_ms": 6400.0, "after_ms": 440.0}}  # fmt: skip
    assert "the profiled steps 0.96 s (12%)" in render_tree_text(session)
    session["config"]["run_time"]["steps_ms"] = 7000.0  # (most of the run: nothing to say)
    assert "the profiled steps" not in render_tree_text(session)


def test_warm_up_steps_and_their_compiling_count_before_the_steps():
    """nanoGPT with compile=True and gradient accumulation: its first step compiled for 25 s,
    and the line read "before them 0.0037 s ... after them 26.7 s" (the steps cut at backward
    calls, then dropped once optimizer steps were seen, were counted nowhere)."""
    net = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, warmup=1, step_boundary="auto") as prof:
        for i in range(8):
            for micro in range(4):
                if i == 0 and micro == 0:
                    time.sleep(0.4)  # (compiling in the first forward)
                net(torch.ones(2, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
    run = prof.session["config"]["run_time"]
    assert run["before_ms"] >= 400 and run["after_ms"] < 200


def test_compiling_before_the_steps_is_named():
    from torchdoctor.render.tree import run_time_text

    rt = {"total_ms": 28000.0, "steps_ms": 1280.0, "before_ms": 26000.0, "after_ms": 720.0,
          "compile_before_ms": 25400.0}  # fmt: skip
    assert "torch.compile compiling 25.4 s of it" in run_time_text({"config": {"run_time": rt}})

"""Steps dropped when the step boundary is revised are counted in config.run_time and named
under the report's headline when they were a sizeable part of the run (timm's benchmark.py
--bench both: its inference benchmark, 22% of the run, was in no table and in no line)."""

from __future__ import annotations

import time

import torch

import torchdoctor
from torchdoctor.render.tree import render_tree_text


def _inference_then_training(inference_calls: int, pause_s: float):
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, warmup=1, step_boundary="auto") as prof:
        with torch.no_grad():  # (an inference benchmark: cut at each model call)
            for _ in range(inference_calls):
                net(torch.ones(4, 8))
                time.sleep(pause_s)
        for _ in range(12):  # (then training: the boundary moves to optimizer.step())
            net(torch.ones(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
    return prof.session


def test_the_steps_dropped_at_the_revised_boundary_are_counted_and_timed():
    session = _inference_then_training(30, 0.04)  # (a run over RUN_TIME_MIN_MS)
    run = session["config"]["run_time"]
    assert "earlier steps dropped" in " ".join(session["config"]["notes"])
    assert run["dropped_steps"] >= 25  # (the inference calls after the warm-up one)
    assert run["dropped_ms"] >= 25 * 40  # (their sleeps at least)
    assert run["dropped_ms"] <= run["before_ms"]  # (part of the time before the kept steps)
    text = render_tree_text(session)
    assert "earlier steps cut at another boundary" in text


def test_a_run_without_a_revised_boundary_notes_no_dropped_steps():
    session = _inference_then_training(0, 0.0)
    assert "dropped_steps" not in session["config"]["run_time"]

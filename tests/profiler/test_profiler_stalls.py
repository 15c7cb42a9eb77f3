"""A stall in one detailed step (a garbage collection, a checkpoint written) does not make the
tree: it shows where a typical step's time goes, and says what it left out."""

import time

import torch
from profiler_helpers import backward_steps
from torch import nn

import torchdoctor
from torchdoctor.session_read import walk


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 12:  # once: a stall inside the module
            time.sleep(0.3)
        end = time.perf_counter() + 0.003  # (steps of a few ms: on a loaded host, steps of
        while time.perf_counter() < end:  # 0.3 ms tripled by hiccups were over 15% of the
            pass  # run, read as the loop's shape, and the stall stayed in a fresh CI's tree)
        return self.fc(x)


def _run():
    return backward_steps(Slow(), torch.randn(4, 8), steps=20)


def test_one_stalled_detailed_step_is_left_out_of_the_tree_with_a_note():
    session = _run()
    nodes = {n["path"]: n for n, _ in walk(session["tree"])}
    assert nodes["Slow"]["forward_ms"]["max"] < 100  # the 300 ms call is not in it
    assert session["step_ms"]["max"] > 250  # ... the step time keeps it
    notes = " ".join(session["config"]["notes"])
    assert "detailed step(s) over 3x the median" in notes and "left out of the tree" in notes


def test_a_slow_step_every_few_steps_is_the_loop_shape_and_stays():
    """A quarter of the steps slow: a pattern of the loop, kept in the tree."""
    from torchdoctor.collect.assemble import typical_steps

    steps = [{"wall_ms": 50.0 if k % 4 == 0 else 1.0} for k in range(20)]
    kept, out = typical_steps(steps)
    assert len(kept) == 20 and out == []


def _evaluate(x, seconds):
    began = time.perf_counter()
    with torch.no_grad():
        while time.perf_counter() - began < seconds:
            x.sum() + 1  # EVALUATION


def test_an_evaluation_inside_a_detailed_step_stops_its_line_timing():
    """Past 10x the recent steps' time (and 50 ms), a detailed step's torch calls are no longer
    timed per line (minGPT's evaluation in its step callback ran 4x slower under them); the
    step is left out of the tree and the lines, its time kept."""
    net = nn.Linear(8, 8)
    x = torch.randn(4, 8)
    with torchdoctor.Profiler(net, syncs=False, window=50) as prof:
        for step in range(30):
            if step == 8:
                _evaluate(x, 0.3)
            net(x).sum().backward()
            prof.step()
    steps = prof.session["steps"]
    assert [s["index"] for s in steps if s.get("lines_cut")] == [8]
    assert steps[8]["wall_ms"] > 250
    lines = [entry["line"] for entry in prof.session["hot_lines"]["lines"]]
    evaluation = _evaluate.__code__.co_firstlineno + 4
    assert evaluation not in lines and lines  # left out; the other steps' lines are there
    assert "left out of the tree" in " ".join(prof.session["config"]["notes"])


def test_an_evaluation_before_the_first_optimizer_step_sets_no_budget_for_training_steps():
    """llm.c, nanoGPT and build-nanogpt evaluate at step 0, before any optimizer step: the
    evaluation's forwards were cut as steps (module calls) and stayed in the recent steps
    after the boundary became optimizer.step(), so every training step with gradient
    accumulation ran past 10 of them: its lines were cut, and it was left out as over 3x the
    median (the Hot lines section was gone)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(64, 512)
    with torchdoctor.Profiler(syncs=False, step_boundary="auto") as prof:
        for step in range(7):
            if step == 0:
                with torch.no_grad():
                    for _ in range(40):
                        model(x[:2])  # small evaluation batches
            for _ in range(10):  # gradient accumulation: a step of 10 micro-batches (> 50 ms)
                (model(x) - x).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    session = prof.session
    assert session["config"]["step_boundary"] == "optimizer"
    assert not [s["index"] for s in session["steps"] if s.get("lines_cut")]
    assert session.get("hot_lines")
    assert "over 3x the median" not in " ".join(session["config"]["notes"])

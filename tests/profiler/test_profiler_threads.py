"""Module calls on other threads (an evaluator, a prefetcher) must not interleave with the
profiled loop's call stack (collect/recorder.py records the profiling thread's calls only)."""

from __future__ import annotations

import threading

import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.tree import check_invariants
from torchdoctor.session_read import walk


def test_a_background_thread_running_a_model_leaves_the_tree_intact():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    side = nn.Sequential(nn.Linear(16, 32), nn.Tanh())
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    stop = threading.Event()
    calls = []

    def evaluator() -> None:
        while not stop.is_set():
            with torch.no_grad():
                side(torch.randn(4, 16))
            calls.append(1)

    thread = threading.Thread(target=evaluator, daemon=True)
    with torchdoctor.Profiler(net, syncs=False, detail="always") as prof:
        thread.start()
        for _ in range(12):
            net(torch.randn(8, 16)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            prof.step()
        stop.set()
        thread.join()
    session = prof.session
    assert len(calls) > 0
    per_step = {n["path"]: n["calls_per_step"] for n, _ in walk(session["tree"]) if n["path"]}
    assert per_step["Sequential"] == 1.0 and per_step["0"] == per_step["2"] == 1.0
    top = {c["path"] for c in session["tree"]["children"]}
    assert top == {"Sequential", "(self)"}  # the evaluator's model is not there
    assert check_invariants(session["tree"], step_ms=session["tree"]["total_ms"]["mean"]) == []
    if prof.state.recorder.other_thread_calls:
        assert any("other threads" in n for n in session["config"]["notes"])


def test_a_loop_that_trains_on_a_thread_of_its_own_makes_the_tree():
    """A script that starts a worker thread to train and joins it (a GUI's, an actor-learner's):
    the first optimizer step on that thread, with no module run on the profiler's, adopts it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def train() -> None:
        for _ in range(12):
            net(torch.randn(8, 16)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            prof.step()

    with torchdoctor.Profiler(net, syncs=False, detail="always") as prof:
        worker = threading.Thread(target=train)
        worker.start()
        worker.join()
    session = prof.session
    per_step = {n["path"]: n["calls_per_step"] for n, _ in walk(session["tree"]) if n["path"]}
    assert per_step["Sequential"] == 1.0 and per_step["0"] == per_step["2"] == 1.0
    assert session["tree"]["forward_ms"]["mean"] > 0 and session["tree"]["backward_ms"]["mean"] > 0
    assert any("a thread of its own" in n for n in session["config"]["notes"])
    assert not any("other threads" in n for n in session["config"]["notes"])
    assert check_invariants(session["tree"], step_ms=session["tree"]["total_ms"]["mean"]) == []

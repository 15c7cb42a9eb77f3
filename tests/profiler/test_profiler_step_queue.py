"""Steps wait as raw clock tokens and records and are summarized in batches (collect/step_queue.py)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.tree import check_invariants
from torchdoctor.collect.clocks import CpuClock
from torchdoctor.collect.schedule import LINES_EVERY, DetailSchedule
from torchdoctor.collect.step_queue import StepQueue
from torchdoctor.collect.step_store import StepStore
from torchdoctor.session_read import walk


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    return net, torch.optim.SGD(net.parameters(), lr=0.01)


def _step(net, opt, x):
    opt.zero_grad()
    net(x).pow(2).mean().backward()
    opt.step()


def _steps(prof, net, opt, x, count):
    for _ in range(count):
        _step(net, opt, x)
        prof.step()


class _CountingClock(CpuClock):
    def __init__(self) -> None:
        super().__init__()
        self.resolved: list[int] = []

    def resolve(self, tokens):
        self.resolved.append(len(tokens))
        return super().resolve(tokens)


def test_a_batch_is_due_at_its_size_or_its_age():
    by_size = StepQueue(batch=3, max_age_s=1e9)
    assert [by_size.add_light(k, k + 1, [(k, "other")], None, True) for k in range(3)] == [
        False, False, True,
    ]  # fmt: skip
    by_age = StepQueue(batch=100, max_age_s=0.05)
    assert by_age.add_light(0, 1, [(0, "other")], None, True) is False  # fast: it waits
    time.sleep(0.06)
    assert by_age.add_light(1, 2, [(1, "other")], None, True) is True  # the oldest waited long
    by_age.flush(CpuClock(), StepStore())
    time.sleep(0.06)  # a step as long as the age limit is summarized at once
    assert by_age.add_light(2, 3, [(2, "other")], None, True) is True
    with pytest.raises(ValueError, match="at least 1"):
        StepQueue(batch=0)


def test_a_flush_resolves_the_whole_batch_at_once_and_keeps_each_step_apart():
    clock, store, pending = _CountingClock(), StepStore(), StepQueue(batch=10)
    pending.add_light(0, 4_000_000, [(0, "data"), (1_000_000, "backward")], None, True)
    pending.add_light(4_000_000, 6_000_000, [(4_000_000, "optimizer")], 7, False)
    pending.flush(clock, store)
    assert clock.resolved == [7]  # one resolve: 2 steps x (start, end) + 3 phase changes
    first, second = list(store)
    assert (first["wall_ms"], first["phases"]["data"], first["phases"]["backward"]) == (4.0, 1.0, 3.0)
    assert (second["wall_ms"], second["phases"]["optimizer"]) == (2.0, 2.0)
    assert (second["peak_memory_bytes"], second["audited"], second["detailed"]) == (7, False, False)
    assert [s["index"] for s in store] == [0, 1] and len(pending) == 0
    pending.flush(clock, store)  # nothing waits: no resolve
    assert clock.resolved == [7]


def test_steps_wait_in_batches_and_the_session_keeps_every_step_in_order():
    net, opt = _net()
    x = torch.randn(8, 6)
    prof = torchdoctor.Profiler(net, syncs=False, window=2, period_steps=6, detail_budget=1.0)
    prof._queue = StepQueue(batch=5, max_age_s=1e9)
    with prof:
        waiting = []
        for _ in range(14):
            _step(net, opt, x)
            prof.step()
            waiting.append(prof.steps_recorded - prof.state.summaries.count)
    assert waiting == [1, 2, 3, 4, 0] * 2 + [1, 2, 3, 4]  # detailed and light steps alike
    steps = prof.session["steps"]
    assert [s["index"] for s in steps] == list(range(14))
    schedule = DetailSchedule("windows", window=2, period_steps=6, period_s=1e9)
    assert [s["detailed"] for s in steps] == [schedule.detailed(k, now_s=0.0) for k in range(14)]
    for s in steps:
        assert sum(s["phases"].values()) == pytest.approx(s["wall_ms"], rel=1e-6)
    assert check_invariants(prof.session["tree"], step_ms=prof.session["tree"]["total_ms"]["mean"]) == []


def test_a_detailed_step_summarized_later_is_the_same_as_at_once():
    """Waiting changes when a step is summarized, not what: the tree and the lines match a
    profile whose every step is summarized at its boundary."""
    def profile(batch):
        net, opt = _net()
        x = torch.randn(8, 6)
        prof = torchdoctor.Profiler(net, syncs=False, detail="always")
        prof._queue = StepQueue(batch=batch, max_age_s=1e9)
        with prof:
            for _ in range(6):
                _step(net, opt, x)
                prof.step()
        s = prof.session
        calls = {n["path"]: n["calls_per_step"] for n, _ in walk(s["tree"])}
        lines = sorted((r["line"], r["calls_per_step"]) for r in s["hot_lines"]["lines"])
        return calls, lines, len(s["steps"]), [st["detailed"] for st in s["steps"]]

    assert profile(batch=1) == profile(batch=32)


def test_a_snapshot_and_max_steps_count_the_waiting_steps():
    net, opt = _net()
    x = torch.randn(8, 6)
    prof = torchdoctor.Profiler(net, syncs=False, window=1, period_steps=100)
    prof._queue = StepQueue(max_age_s=1e9)  # (a slow machine must not flush them early)
    with prof:
        _steps(prof, net, opt, x, 5)
        assert prof.steps_recorded == 5 and prof.state.summaries.count == 0
        assert len(prof.snapshot()["steps"]) == 5  # a checkpoint holds the waiting steps
    with torchdoctor.Profiler(net, syncs=False, window=1, period_steps=100, max_steps=4) as prof:
        _steps(prof, net, opt, x, 9)
    assert len(prof.session["steps"]) == 4


def test_a_revised_boundary_drops_the_waiting_steps_too():
    net, opt = _net()
    x = torch.randn(8, 6)
    with torchdoctor.Profiler(net, syncs=False, window=1, period_steps=100) as prof:
        _steps(prof, net, opt, x, 4)
        assert prof.steps_recorded == 4
        prof._drop_steps()
        assert prof.steps_recorded == 0
        _step(net, opt, x)
        prof.step()
    assert [s["index"] for s in prof.session["steps"]] == [0]


def test_cpu_light_steps_do_not_read_the_peak_memory():
    net, opt = _net()
    x = torch.randn(8, 6)
    with torchdoctor.Profiler(net, syncs=False, window=2, period_steps=100) as prof:
        _steps(prof, net, opt, x, 4)
    peaks = [(s["detailed"], s["peak_memory_bytes"] is None) for s in prof.session["steps"]]
    assert peaks == [(True, False), (True, False), (False, True), (False, True)]


def test_waiting_steps_are_summarized_before_the_clock_changes(monkeypatch):
    """`run` switches to CUDA events at a step boundary: steps timed with the host clock must be
    resolved with it first."""
    from torchdoctor.collect import profiler_steps

    net, opt = _net()
    x = torch.randn(8, 6)
    waiting_at_switch = []

    def adopt(profiler):
        waiting_at_switch.append(len(profiler._queue))
        return False

    monkeypatch.setattr(profiler_steps, "adopt_cuda_clock", adopt)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with torchdoctor.Profiler(net, syncs=False, window=1, period_steps=100) as prof:
        prof._watch_cuda = True
        for _ in range(4):
            _step(net, opt, x)
            prof.step()
    assert waiting_at_switch and set(waiting_at_switch) == {0}


def test_steps_dropped_while_waiting_still_carry_their_line_backward():
    """A revised boundary drops the waiting steps; the sites they hooked for backward are not
    hooked again, so their tables are still built: the next steps carry the measured backward."""
    net = nn.Linear(6, 6)
    x = torch.randn(8, 6, requires_grad=True)
    prof = torchdoctor.Profiler(net, syncs=False, detail="always")
    prof._queue = StepQueue(batch=100, max_age_s=1e9)
    with prof:
        # the first step hooks the line's backward, the next 3 that time lines carry it
        for k in range(1 + 3 * LINES_EVERY):
            loss = (net(x) * x).tanh().sum()  # LINE
            loss.backward()
            prof.step()
            if k == 0:
                prof._drop_steps()
    hot = prof.session["hot_lines"]
    # the kept steps 0..5 are numbered anew from the running one (0, begun as step 1: no
    # lines); 2 and 4 time lines, and both carry the dropped step's measured backward
    assert hot["steps"] == hot["backward_carried_steps"] == 2
    [line] = [r for r in hot["lines"] if "# LINE" in r["code"]]
    assert line["backward_ms"]["min"] > 0

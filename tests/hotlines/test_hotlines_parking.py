"""The hot-lines mode is parked (off the mode stack) in the optimizer and data phases, and put
back at the same depth for the rest of the step: the optimizer's per-parameter torch calls do
not pay its dispatch, lines in an LBFGS closure are still timed, and the sync audit still sees
the optimizer's syncs."""

from __future__ import annotations

import pytest
import torch
from hotlines_helpers import lines_at, marked_line
from torch.overrides import _get_current_function_mode_stack

import torchdoctor
from torchdoctor.collect.lines import _Mode as LineMode
from torchdoctor.collect.schedule import LINES_EVERY, DetailSchedule
from torchdoctor.collect.syncs_modes import FunctionMode as AuditMode


def _kinds() -> list[str]:
    names = {LineMode: "lines", AuditMode: "audit"}
    return [names.get(type(mode), type(mode).__name__) for mode in _get_current_function_mode_stack()]


class SpySGD(torch.optim.SGD):
    """SGD that records the mode stack while it runs and syncs once (a clipping ``.item()``)."""

    seen: list[list[str]]

    def step(self, closure=None):
        self.seen.append(_kinds())
        norm = sum(p.grad.norm() for g in self.param_groups for p in g["params"])
        norm.item()  # SYNC
        return super().step(closure)


def test_the_mode_is_off_the_stack_in_the_optimizer_and_back_in_order_after():
    model = torch.nn.Linear(4, 4)
    opt = SpySGD(model.parameters(), lr=0.1)
    opt.seen = []
    x = torch.randn(8, 4)
    during_forward = []
    with torchdoctor.Profiler(model, syncs=True, detail="always") as prof:
        for _ in range(3):
            loss = model(x).square().mean()
            during_forward.append(_kinds())
            loss.backward()
            opt.step()
            opt.zero_grad()
            after = _kinds()
            prof.step()
    assert during_forward[-1] == ["lines", "audit"]  # the audit above: its cost is no line's
    assert all("lines" not in kinds for kinds in opt.seen)
    assert all(kinds == ["audit"] for kinds in opt.seen)
    assert after == ["lines", "audit"]  # put back under the audit, not on top
    assert _kinds() == []
    where = marked_line(SpySGD.step, "SYNC")
    (sync,) = [s for s in prof.session["syncs"] if s["line"] == where]
    assert sync["phase"] == "optimizer" and sync["per_step"] == pytest.approx(1)


def test_lines_in_an_lbfgs_closure_are_still_timed():
    model = torch.nn.Linear(6, 6)
    x, target = torch.randn(4, 6), torch.randn(4, 6)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=3)

    def closure():  # its module call switches the phase to forward (collect/phases.py)
        opt.zero_grad()
        loss = (torch.tanh(model(x)) - target).square().sum()  # CLOSURE
        loss.backward()
        return loss

    with torchdoctor.Profiler(model, syncs=False, detail="always") as prof:
        for _ in range(3):
            opt.step(closure)
            prof.step()
    (line,) = lines_at(prof.session, __file__, marked_line(closure, "CLOSURE"))
    assert line["torch_calls_per_step"] >= 3  # tanh, -, square, sum per evaluation
    assert _kinds() == []


def test_an_optimizer_that_raises_does_not_leave_lines_parked():
    model = torch.nn.Linear(3, 1)
    x = torch.randn(5, 3)

    class Flaky(torch.optim.SGD):
        calls = 0

        def step(self, closure=None):
            Flaky.calls += 1
            if Flaky.calls == 1 + LINES_EVERY:  # (a step that times lines)
                raise FloatingPointError("planted")
            return super().step(closure)

    opt = Flaky(model.parameters(), lr=0.1)

    in_forward = []

    def step():
        loss = torch.sigmoid(model(x)).sum()  # AFTER
        in_forward.append(_kinds())
        loss.backward()
        opt.step()

    with torchdoctor.Profiler(model, syncs=False, detail="always") as prof:
        for _ in range(1 + 2 * LINES_EVERY):
            try:
                step()
            except FloatingPointError:
                assert "lines" not in _kinds()  # parked when the optimizer raised
            prof.step()
    # back in the forward of the next step that times lines (one detailed step of 2)
    assert in_forward == [["lines"] if i % LINES_EVERY == 0 else [] for i in range(len(in_forward))]
    assert _kinds() == []
    (line,) = lines_at(prof.session, __file__, marked_line(step, "AFTER"))
    assert line["calls_per_step"] == pytest.approx(1)


def test_the_zero_grad_wrapper_is_installed_once_and_removed_at_stop():
    model = torch.nn.Linear(3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    original = torch.optim.Optimizer.__dict__["zero_grad"]
    # windows of 1 step every 2: the collector stops and starts again five times
    with torchdoctor.Profiler(model, syncs=True, window=1, period_steps=2) as prof:
        for _ in range(10):
            opt.zero_grad()
            model(torch.randn(2, 3)).sum().backward()
            opt.step()
            prof.step()
        wrapped, depth = torch.optim.Optimizer.__dict__["zero_grad"], 0
        while wrapped is not original and depth < 10:  # the audit's bypass, then ours
            cells = [c.cell_contents for c in wrapped.__closure__ or ()]
            wrapped = next(c for c in cells if callable(c) and getattr(c, "__name__", "") == "zero_grad")
            depth += 1
        assert wrapped is original and depth == 2  # none piled up over the windows
    assert torch.optim.Optimizer.__dict__["zero_grad"] is original  # restored at stop


def test_zero_grad_line_calls_pass_no_grad_attribute_through_the_mode():
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(6)])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 4)
    with torchdoctor.Profiler(model, syncs=False, detail="always") as prof:
        for _ in range(3):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
            prof.step()
    # 12 parameters: their grad reads and writes in zero_grad would be 24+ calls per step
    per_step = prof.state.line_calls_seen / prof.state.line_steps
    assert per_step < 20, per_step


@pytest.mark.parametrize("syncs", [True, False])
def test_steps_cut_inside_backward_leave_no_mode_behind_in_light_steps(syncs):
    """A loop with no optimizer ends its steps inside ``loss.backward()``, where torch has
    popped the modes for their handlers and pushes them back after: the collector's mode,
    stopped there at the end of each window, must not stay (it used to: one more each window,
    every light step paying all of them)."""
    net = torch.nn.Linear(4, 1)
    x = torch.randn(16, 4)
    light, counted = [], []
    with torchdoctor.Profiler(net, step_boundary="auto", window=2, period_steps=6, syncs=syncs,
                              memory=False) as prof:  # fmt: skip
        for _ in range(40):
            loss = (net(x) - 1.0).square().mean()
            loss.backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.01 * p.grad
                    p.grad = None
            if not prof._detailed:
                light.append(_kinds().count("lines"))
            if prof._lines.step_seen:
                counted.append(prof._lines.step_seen)
    assert light and max(light) == 0  # the mode is gone once a light step's update runs
    assert len(set(counted)) <= 2  # calls seen per detailed step do not grow window by window


def test_a_detailed_step_without_lines_after_light_steps_keeps_the_modes_in_order(monkeypatch):
    """A window whose first step times no lines (after light steps, where the mode was
    stopped): the mode is put back below the sync audit's, parked; the next step that times
    lines finds it there and the audit leaves cleanly."""
    monkeypatch.setattr(DetailSchedule, "times_lines", lambda self, index: index % 2 == 1)
    model = torch.nn.Linear(3, 3)
    x = torch.randn(4, 3)
    kinds = []
    with torchdoctor.Profiler(model, syncs=True, window=2, period_steps=4, period_s=1e9,
                              detail_budget=1.0) as prof:  # fmt: skip
        for _ in range(12):
            loss = torch.tanh(model(x)).sum()  # TIMED
            kinds.append(_kinds())
            loss.backward()
            prof.step()
    assert _kinds() == []
    assert ["audit"] in kinds and ["lines", "audit"] in kinds  # (the mode stack, bottom first)
    assert all(k in ([], ["audit"], ["lines", "audit"]) for k in kinds), kinds
    (line,) = lines_at(prof.session, __file__, marked_line(
        test_a_detailed_step_without_lines_after_light_steps_keeps_the_modes_in_order, "TIMED"))
    assert line["calls_per_step"] == pytest.approx(1)

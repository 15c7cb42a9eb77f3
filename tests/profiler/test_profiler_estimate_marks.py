"""The hooks' calibrated cost follows the autograd hooks a run's module calls register
(backward marks: collect/profiler_overhead.py ``hook_cost_per_call_us``)."""

from __future__ import annotations

import torch
from torch import nn

import torchdoctor
from torchdoctor.collect import profiler_overhead
from torchdoctor.collect.clocks import CpuClock
from torchdoctor.collect.install import Installation
from torchdoctor.collect.profiler_overhead import (
    CALIBRATION_GRAPH_HOOKS_PER_CALL,
    hook_cost_per_call_us,
)
from torchdoctor.collect.recorder import Recorder
from torchdoctor.collect.state import STATE


class _Cells(nn.Module):
    """An LSTM unrolled by hand: each cell call takes (h, c) and returns two tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(2, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = torch.zeros(x.size(0), 8)
        outs = []
        for xt in x.split(1, dim=1):
            h, c = self.cell(xt.expand(-1, 2), (h, c))
            outs.append(self.head(h))
        return torch.cat(outs, 1)


def test_the_calibrations_hooks_per_call_is_what_its_model_registers():
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))  # (the calibration's)
    rec = Recorder(CpuClock(), backward=True, memory=False)
    rec.detailed = True
    hooks = Installation()
    hooks.add_module_hooks(rec.pre_hook, rec.post_hook)
    rec.new_step(rec.now())
    try:
        model(torch.randn(4, 8)).sum().backward()
        assert len(rec.registered) / len(rec.fwd) == CALIBRATION_GRAPH_HOOKS_PER_CALL
    finally:
        hooks.remove()
        rec.release_handles()
        rec.phases.reset()
        STATE.module_stack.clear()


def test_the_marks_share_of_the_cost_grows_with_the_hooks_per_call(monkeypatch):
    costs = {(True, "total"): 40.0, (False, "total"): 16.0,
             (True, "outside"): 20.0, (False, "outside"): 11.0}  # fmt: skip
    monkeypatch.setattr(profiler_overhead, "per_module_call_cost_us",
                        lambda backward, detailed=True, part="total": costs[backward, part])
    calibration = CALIBRATION_GRAPH_HOOKS_PER_CALL
    assert hook_cost_per_call_us(True, "total", calibration) == 40.0
    assert hook_cost_per_call_us(True, "total", 2 * calibration) == 16.0 + 2 * 24.0
    assert hook_cost_per_call_us(True, "outside", 0.0) == 11.0  # nothing requires grad
    assert hook_cost_per_call_us(True, "outside") == 20.0  # (not counted: the calibration's)
    assert hook_cost_per_call_us(False, "total", 5.0) == 16.0  # no backward: no marks


def test_a_run_counts_its_calls_hooks_and_the_estimate_prices_them():
    torch.manual_seed(0)
    model = _Cells()
    x = torch.randn(4, 12)
    with torchdoctor.Profiler(detail="always", syncs=False, hot_lines=False) as prof:
        for _ in range(4):
            model(x).pow(2).mean().backward()
            prof.step()
    per_call = prof.state.graph_hooks / prof.state.hook_calls
    assert per_call > 1.2 > CALIBRATION_GRAPH_HOOKS_PER_CALL  # (h, c) in, two tensors out
    estimate = prof.session["config"]["profiler_overhead"]
    assert estimate["graph_hooks_per_call"] == per_call

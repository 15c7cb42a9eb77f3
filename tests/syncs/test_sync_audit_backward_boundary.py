"""A loop whose steps end at ``backward()`` (no optimizer: a hand-written SGD) cuts each step
inside the audit's own ``Tensor.backward`` handler, where torch holds the audit's mode off the
stack. The audit must still pause between detail windows: before, it ran in every light step
(``audited_count`` = every step), and its syncs there were labelled ``other`` (light steps mark
no forward)."""

import torch
from torch import nn

import torchdoctor


def test_the_audit_pauses_between_windows_when_steps_end_at_backward():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(8, 16)
    with torchdoctor.Profiler(
        None, step_boundary="auto", warmup=1, window=3, period_steps=8, hot_lines=False
    ) as prof:
        for _ in range(20):
            out = net(x)
            if out.sum() > -1e9:  # a sync in the forward, every step
                pass
            out.sum().backward()
            for p in net.parameters():
                p.data.add_(p.grad, alpha=-0.01)
            net.zero_grad()
    config = prof.session["config"]
    assert config["step_boundary"] == "backward"
    detail = config["detail"]
    assert detail["audited_count"] == detail["detailed_count"] < config["steps"]
    (record,) = [r for r in prof.session["syncs"] if r["kind"] == "bool"]
    assert record["phase"] == "forward" and record["per_step"] == 1.0
    # ... and once stopped, no mode is left behind
    assert torch.overrides._get_current_function_mode_stack() == []

"""WeightSchedule and param_groups."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.train import WeightSchedule, param_groups


def test_step_schedule_warmup_then_values_then_hold():
    schedule = WeightSchedule([0.1, 0.3, 0.5], warmup_epochs=1)
    assert [schedule(e) for e in range(6)] == [0.0, 0.1, 0.3, 0.5, 0.5, 0.5]
    assert not schedule.active(0) and schedule.active(1)
    assert schedule(1.9) == 0.1  # a fractional epoch stays on its step
    assert "weight=0.000" in schedule.state(0) and "warm-up 1/1" in schedule.state(0)
    assert "weight=0.500" in schedule.state(5)
    assert "[0.1, 0.3, 0.5]" in str(schedule)


def test_linear_and_cosine_ramps():
    linear = WeightSchedule(kind="linear", start=0.0, end=0.5, ramp_epochs=2, warmup_epochs=1)
    cosine = WeightSchedule(kind="cosine", start=0.0, end=0.5, ramp_epochs=2, warmup_epochs=1)
    assert linear(0.5) == 0.0 and cosine(0.5) == 0.0
    assert linear(2.0) == pytest.approx(0.25) and cosine(2.0) == pytest.approx(0.25)
    assert linear(1.5) == pytest.approx(0.125) and cosine(1.5) < linear(1.5)
    assert linear(10) == 0.5 and cosine(10) == pytest.approx(0.5)
    points = [cosine(1 + i / 10) for i in range(21)]
    assert points == sorted(points)


def test_schedule_errors_are_explained():
    with pytest.raises(ValueError, match="unknown schedule kind"):
        WeightSchedule([0.1], kind="exp")
    with pytest.raises(ValueError, match="needs end"):
        WeightSchedule(kind="linear")
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        WeightSchedule([0.1])(-1)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        self.head = torch.nn.Linear(4, 2)
        self.neck = torch.nn.Linear(4, 4)
        self.frozen = torch.nn.Linear(4, 4).requires_grad_(False)


def test_param_groups_longest_prefix_default_and_frozen():
    net = _Net()
    groups = param_groups(
        net,
        {"head": 3e-3, "backbone": 1e-5, "backbone.1": {"lr": 1e-4, "weight_decay": 0.0}},
        default=1e-3,
    )
    by_name = {g["name"]: g for g in groups}
    ids = {name: {id(p) for p in g["params"]} for name, g in by_name.items()}
    assert ids["head"] == {id(p) for p in net.head.parameters()}
    assert ids["backbone.1"] == {id(p) for p in net.backbone[1].parameters()}
    assert ids["backbone"] == {id(p) for p in net.backbone[0].parameters()}
    assert ids["default"] == {id(p) for p in net.neck.parameters()}
    assert by_name["backbone.1"]["weight_decay"] == 0.0 and by_name["default"]["lr"] == 1e-3
    optimizer = torch.optim.SGD(groups, lr=0.1)
    assert [g["lr"] for g in optimizer.param_groups] == [3e-3, 1e-5, 1e-4, 1e-3]


def test_param_groups_unknown_prefix_is_an_error():
    with pytest.raises(ValueError, match="top-level modules are: backbone, head"):
        param_groups(_Net(), {"heads": 1e-3})

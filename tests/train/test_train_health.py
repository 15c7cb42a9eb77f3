"""HealthMonitor: thresholds with activation, moving averages, trends, NaN/Inf, actions."""

from __future__ import annotations

import math

import pytest
import torch

from torchdoctor.testing import count_host_syncs
from torchdoctor.train import (
    Condition,
    Finite,
    HealthError,
    HealthMonitor,
    HealthWarning,
    MovingAverage,
    Threshold,
    Trend,
    parse_check,
)


def _monitor(checks, **kwargs):
    lines: list[str] = []
    monitor = HealthMonitor(
        checks, log=lines.append, detail_every=kwargs.pop("detail_every", None), **kwargs
    )
    return monitor, lines


def test_threshold_is_inactive_until_its_condition_has_held_once():
    monitor, lines = _monitor(["ce < 2.5 once sdm_weight > 0"])
    weights = [0, 0, 0.1, 0.1, 0.0, 0.3]
    ces = [5.9, 3.0, 2.0, 2.7, 2.8, 1.5]
    for step, (w, ce) in enumerate(zip(weights, ces)):
        monitor.observe(step, ce=ce, sdm_weight=w)
    # steps 0-1 are before SDM starts; step 4 stays checked although the weight went back to 0
    assert [a.step for a in monitor.alarms] == [3, 4]
    alarm = monitor.alarms[0]
    assert (alarm.check, alarm.metric, alarm.value, alarm.threshold) == (
        "ce < 2.5 once sdm_weight > 0",
        "ce",
        2.7,
        2.5,
    )
    assert (
        lines[0]
        == "[health] step 3: ce = 2.7, expected < 2.5 (check 'ce < 2.5 once sdm_weight > 0')"
    )


def test_moving_average_window():
    monitor, _ = _monitor([MovingAverage("pair_coverage", ">=", 0.85, window=4)])
    coverage = [1.0, 1.0, 1.0, 1.0, 0.5, 0.9, 0.5, 1.0]
    for step, value in enumerate(coverage):
        monitor.observe(step, pair_coverage=value)
    expected = []
    for step in range(len(coverage)):
        window = coverage[max(0, step - 3) : step + 1]
        if sum(window) / len(window) < 0.85:
            expected.append(step)
    assert [a.step for a in monitor.alarms] == expected == [6, 7]
    assert monitor.alarms[0].value == pytest.approx((0.5 + 0.9 + 0.5 + 1.0) / 4)


def test_trend_not_falling_over_n_observations():
    monitor, _ = _monitor(["top1 not falling over 2 tolerance 0.01"])
    for step, top1 in enumerate([0.5, 0.6, 0.7, 0.695, 0.65, 0.62, 0.7]):
        monitor.observe(step * 50, top1=top1)
    # 0.695 - 0.6 > 0; 0.65 - 0.7 = -0.05 alarm; 0.62 - 0.695 alarm; 0.7 - 0.65 fine
    assert [a.step for a in monitor.alarms] == [200, 250]
    assert monitor.alarms[0].value == pytest.approx(-0.05)
    assert monitor.alarms[0].threshold == -0.01


def test_finite_catches_nan_and_inf_in_losses_and_grad_norms():
    monitor, _ = _monitor(["finite(loss, grad_norm)", Finite()])
    monitor.observe(0, loss=1.0, grad_norm=2.0, other=0.0)
    monitor.observe(1, loss=float("nan"), grad_norm=1.0)
    monitor.observe(2, loss=1.0, grad_norm=torch.tensor(float("inf")))
    monitor.observe(3, loss=1.0, grad_norm=1.0, other=float("-inf"))
    named = [(a.step, a.metric) for a in monitor.alarms if a.check == "finite(loss, grad_norm)"]
    every = [(a.step, a.metric) for a in monitor.alarms if a.check == "finite()"]
    assert named == [(1, "loss"), (2, "grad_norm")]
    assert every == [(1, "loss"), (2, "grad_norm"), (3, "other")]
    assert math.isinf(monitor.alarms[-1].value)


def test_actions_warn_raise_and_callback():
    seen = []
    checks = [
        Threshold("ce", "<", 2.5, action="warn"),
        Threshold("loss", "<", 10, action=seen.append),
        Threshold("grad_norm", "<", 100, action="raise"),
    ]
    monitor, lines = _monitor(checks)
    with pytest.warns(HealthWarning, match="ce = 3"):
        monitor.observe(0, ce=3.0, loss=1.0, grad_norm=1.0)
    monitor.observe(1, ce=1.0, loss=11.0, grad_norm=1.0)
    assert [a.metric for a in seen] == ["loss"] and lines == []
    with pytest.raises(HealthError, match="grad_norm = 1000, expected < 100") as error:
        monitor.observe(2, ce=1.0, loss=1.0, grad_norm=1000.0)
    assert error.value.alarm.step == 2 and error.value.alarm.threshold == 100


def test_tensor_values_are_resolved_in_one_sync_every_check_every_steps():
    monitor, lines = _monitor(["loss < 1.5"], check_every=10)
    with count_host_syncs() as syncs:
        for step in range(1, 10):
            assert monitor.observe(step, loss=torch.tensor(float(step) / 4)) == []
    assert syncs.count == 0 and monitor.alarms == []
    alarms = monitor.observe(10, loss=torch.tensor(0.0))
    assert monitor.syncs == 1
    assert [a.step for a in alarms] == [6, 7, 8, 9]  # the steps the values belong to


def test_detail_lines_every_n_steps():
    monitor, lines = _monitor(["ce < 2.5"], detail_every=50)
    for step in range(101):
        monitor.observe(step, ce=1.0 if step != 100 else 3.0, top1=0.5)
    details = [line for line in lines if "|" in line]
    assert len(details) == 3  # steps 0, 50, 100
    assert details[1].startswith("[health] step 50: ce=1 top1=0.5 | 'ce < 2.5': ok")
    assert details[2].endswith("'ce < 2.5': ALARM")


def test_parse_check_forms_and_errors():
    assert isinstance(parse_check("mean(pair_coverage, 100) >= 0.85"), MovingAverage)
    assert parse_check("mean(pair_coverage, 100) >= 0.85").window == 100
    trend = parse_check("top1 not falling over 5")
    assert isinstance(trend, Trend) and trend.over == 5
    threshold = parse_check("ce<2.5 once sdm_weight>0")
    assert threshold.when == Condition("sdm_weight", ">", 0.0)
    for text in [
        "ce < 2.5 once sdm_weight > 0",
        "mean(pair_coverage, 100) >= 0.85",
        "top1 not falling over 5",
        "finite(loss, grad_norm)",
    ]:
        assert str(parse_check(text)) == text
    with pytest.raises(ValueError, match="cannot parse health check"):
        parse_check("ce is low")
    with pytest.raises(ValueError, match="unknown action"):
        HealthMonitor(["ce < 1"], action="shout")


def test_details_default_to_the_latest_step_and_windows_must_fit_the_history():
    monitor = HealthMonitor(["x < 1"], action="log", log=lambda message: None)
    for step in range(3):
        monitor.observe(step, x=2.0)
    assert "'x < 1': ALARM" in monitor.details()
    assert monitor.details() == monitor.details(2).replace("step 2", "latest")
    with pytest.raises(ValueError, match=r"needs the last 6 observations but history keeps 5"):
        HealthMonitor(["top1 not falling over 5"], history=5)
    with pytest.raises(ValueError, match=r"needs the last 10 observations"):
        HealthMonitor(["mean(x, 10) >= 5"], history=3)

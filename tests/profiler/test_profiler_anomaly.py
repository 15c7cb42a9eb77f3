"""Autograd anomaly detection left on: seen in the steps, its cost measured, one advice (merged
with the linter's TD702 on the line that turned it on), and a tune knob that turns it off."""

import warnings

import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.debug_modes import anomaly_detection
from torchdoctor.tuning.knobs import KNOB_BY_NAME


def _train(anomaly: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 32), torch.randint(0, 4, (16,))
    with torch.autograd.set_detect_anomaly(anomaly):
        with torchdoctor.Profiler(model, syncs=False, hot_lines=False) as prof:
            for _ in range(12):
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad()
                prof.step()
    return prof.session.to_dict()


def test_anomaly_detection_on_is_measured_per_autograd_node_and_advised():
    session = _train(anomaly=True)
    info = session["anomaly_detection"]
    assert session["environment"]["knobs"]["anomaly_detection"] is True
    # forward: addmm, relu, addmm, cross_entropy's nodes (log_softmax, nll_loss) at least
    assert info["nodes_per_step"] >= 5 and info["us_per_node"] > 0 and info["stack_depth"] > 5
    assert abs(info["ms_per_step"] - info["us_per_node"] * info["nodes_per_step"] / 1e3) < 1e-9
    advice = [a for a in advise(session) if a.rule == "anomaly-detection"]
    assert len(advice) == 1 and "set_detect_anomaly(args.debug)" in advice[0].fix
    assert advice[0].estimated_saving_ms == min(
        info["ms_per_step"], 0.9 * session["step_ms"]["mean"]
    )


def test_anomaly_detection_off_says_nothing():
    session = _train(anomaly=False)
    assert "anomaly_detection" not in session
    assert anomaly_detection(session) == []
    assert not any(a.rule == "anomaly-detection" for a in advise(session))


def test_the_linter_finding_on_the_switch_merges_into_the_measured_advice():
    session = _train(anomaly=True)
    session["lint"] = [{
        "code": "TD702", "path": "/tmp/train.py", "line": 3, "severity": "warning",
        "message": "anomaly detection is switched on unconditionally in training code and "
        "slows every step: enable it behind a debug flag (`if args.debug:`), or remove it",
    }]  # fmt: skip
    merged = [a for a in advise(session) if a.rule == "anomaly-detection"]
    assert len(merged) == 1 and "/tmp/train.py:3" in " ".join(merged[0].locations)
    assert not any(a.rule == "lint" and "TD702" in a.title for a in advise(session))


def test_the_tune_knob_applies_only_when_on_and_keeps_it_off():
    knob = KNOB_BY_NAME["anomaly_detection_off"]
    assert knob.applies({"anomaly": False}) == "autograd anomaly detection is off"
    assert knob.applies({"anomaly": True}) is None
    original = torch.set_anomaly_enabled
    try:
        knob.on_start(None)
        torch.autograd.set_detect_anomaly(True)  # what the script does
        assert not torch.is_anomaly_enabled()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (its "Anomaly Detection has been enabled")
            with torch.autograd.detect_anomaly():
                assert not torch.is_anomaly_enabled()
    finally:
        torch.set_anomaly_enabled = original
        torch.set_anomaly_enabled(False)

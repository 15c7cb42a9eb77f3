"""Which knobs apply (module types, device), and the drift check (in-process trials)."""

from __future__ import annotations

import torch

import torchdoctor
from torchdoctor.tuning.evaluate import combination
from torchdoctor.tuning.harness import Trial
from torchdoctor.tuning.knobs import KNOB_BY_NAME, KNOBS, knob_names


def _observe(model: torch.nn.Module, x: torch.Tensor) -> dict:
    trial = Trial({"knobs": [], "warmup": 1, "steps": 5})
    trial.install()
    try:
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(3):
            opt.zero_grad()
            model(x).float().pow(2).mean().backward()
            opt.step()
    finally:
        trial.remove()
    return trial.observed()


def test_channels_last_is_offered_only_with_convolutions():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    linear = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    # a module *named* like a conv is not one: types decide, never names
    linear.add_module("conv", torch.nn.Identity())
    knob = KNOB_BY_NAME["channels_last"]
    assert knob.applies(_observe(conv, torch.randn(2, 3, 8, 8))) is None
    reason = knob.applies(_observe(linear, torch.randn(2, 8)))
    assert reason and "no Conv2d/Conv3d" in reason


def test_cuda_only_knobs_are_skipped_with_their_reason_on_cpu():
    observed = _observe(torch.nn.Linear(4, 1), torch.randn(2, 4))
    observed["cuda_available"] = False
    for name in ("fp16_autocast", "tf32", "cudnn_benchmark", "compile_reduce_overhead",
                 "compile_max_autotune"):  # fmt: skip
        assert KNOB_BY_NAME[name].applies(observed) == "needs CUDA: no GPU on this machine"
    observed["cuda_available"] = True  # a GPU, but the model is on the CPU
    assert KNOB_BY_NAME["tf32"].applies(observed) == "needs CUDA: the model runs on cpu"
    assert KNOB_BY_NAME["bf16_autocast"].applies(observed) is None
    assert KNOB_BY_NAME["compile"].applies(observed) is None


def test_optimizer_and_inference_knobs_follow_what_the_script_does():
    observed = _observe(torch.nn.Linear(4, 1), torch.randn(2, 4))
    assert KNOB_BY_NAME["foreach_optimizer"].applies(observed) is None
    assert "backward() runs" in KNOB_BY_NAME["inference_mode"].applies(observed)
    assert "no torch.utils.data.DataLoader" in KNOB_BY_NAME["dataloader_workers"].applies(observed)
    no_optimizer = {**observed, "optimizers": []}
    assert KNOB_BY_NAME["fused_optimizer"].applies(no_optimizer) == "no torch.optim optimizer steps"


def test_the_test_only_knob_is_hidden_from_users():
    assert "perturb_weights" not in knob_names()
    assert all(knob.snippet for knob in KNOBS if not knob.hidden)


def test_combination_keeps_one_knob_per_group():
    rows = [{"knob": "compile", "accepted": True, "speedup": {"median": 1.4}},
            {"knob": "compile_max_autotune", "accepted": True, "speedup": {"median": 1.5}},
            {"knob": "foreach_optimizer", "accepted": True, "speedup": {"median": 1.1}},
            {"knob": "channels_last", "accepted": False, "speedup": {"median": 2.0}}]  # fmt: skip
    assert combination(rows) == ["compile_max_autotune", "foreach_optimizer"]


def _training_step():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(64, 16), torch.randn(64, 1)

    def step():
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return step, net, opt


def test_the_perturbing_knob_is_rejected_by_the_drift_check_with_its_figure():
    step, net, opt = _training_step()
    before = [p.detach().clone() for p in net.parameters()]
    session = torchdoctor.tune(step, model=net, optimizer=opt, knobs=["perturb_weights"],
                               steps=3, warmup=1, rounds=1)  # fmt: skip
    (row,) = session["tune"]["rows"]
    assert row["verdict"] == "rejected" and not row["accepted"]
    assert row["drift"] > 0.1 and f"drift {row['drift']:.3g} > limit 0.05" in row["reason"]
    assert session["tune"]["baseline"]["drift"] == 0.0  # same seed, same state: same losses
    assert session["tune"]["chosen"] == []
    # the model and optimizer are back as they were, hooks and class included
    assert type(net) is torch.nn.Sequential
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_bf16_autocast_trial_in_process_stays_within_tolerance():
    step, net, opt = _training_step()
    session = torchdoctor.tune(step, model=net, optimizer=opt, knobs=["bf16_autocast"],
                               steps=3, warmup=1, rounds=1)  # fmt: skip
    (row,) = session["tune"]["rows"]
    assert row["status"] == "measured" and row["speedup"]["pairs"] == 1
    assert 0 < row["drift"] < 0.05 and row["verdict"] != "rejected"

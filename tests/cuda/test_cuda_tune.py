"""tune's CUDA knobs on a real GPU: offered where they apply, tried, and measured (not skipped)."""

from __future__ import annotations

import pytest
import torch
from cuda_device import DEVICE, require_real_cuda

import torchdoctor
from torchdoctor.tuning.knobs import KNOB_BY_NAME

pytestmark = pytest.mark.cuda

CUDA_KNOBS = ("fp16_autocast", "tf32", "cudnn_benchmark", "compile_reduce_overhead")


def _observed(device: str, conv: bool) -> dict:
    return {"device": device, "cuda_available": device == "cuda",
            "roots": [{"params": 10, "conv": conv}], "optimizers": [], "loaders": [],
            "backward": True}  # fmt: skip


@pytest.mark.parametrize("name", CUDA_KNOBS)
def test_cuda_knobs_apply_on_cuda_and_say_why_not_on_cpu(name):
    knob = KNOB_BY_NAME[name]
    assert knob.applies(_observed("cuda", conv=True)) is None
    assert "CUDA" in (knob.applies(_observed("cpu", conv=True)) or "")


def _conv_step():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 16 * 16, 10),
    ).to(DEVICE)  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(32, 3, 16, 16, device=DEVICE)
    y = torch.randint(0, 10, (32,), device=DEVICE)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return step, net, opt


def test_cuda_knobs_are_tried_and_measured_on_the_device():
    require_real_cuda()
    step, net, opt = _conv_step()
    knobs = ["fp16_autocast", "tf32", "cudnn_benchmark", "channels_last", "bf16_autocast"]
    session = torchdoctor.tune(step, model=net, optimizer=opt, knobs=knobs, steps=4, warmup=2,
                               rounds=1)  # fmt: skip
    rows = {row["knob"]: row for row in session["tune"]["rows"]}
    for name in knobs:
        assert rows[name]["status"] == "measured", rows[name]
        assert rows[name]["verdict"] not in ("failed", "skipped"), rows[name]
    assert rows["fp16_autocast"]["drift"] < 0.05  # GradScaler keeps the loss close

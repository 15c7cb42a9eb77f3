"""The profiler and the sync audit on a real GPU: event timing, no sync per hook, real stalls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from cuda_device import DEVICE, require_real_cuda
from torch import nn

import torchdoctor
from torchdoctor.analyze.tree import check_invariants
from torchdoctor.session_read import walk

pytestmark = pytest.mark.cuda


def _train_step(model: nn.Module, x: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        model(x).float().pow(2).mean().backward()
        opt.step()

    return step


def _mlp(width: int = 64, depth: int = 4) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def _check_tree(session) -> None:
    # the tree comes from the detailed steps (detail windows): it adds up to their time
    assert check_invariants(session["tree"], step_ms=session["tree"]["total_ms"]["mean"]) == []
    for step in session["steps"]:
        assert sum(step["phases"].values()) == pytest.approx(step["wall_ms"], rel=1e-6)


@pytest.mark.parametrize("build", ["mlp", "cnn", "transformer"])
def test_tree_invariants_on_device(build):
    torch.manual_seed(0)
    if build == "mlp":
        model, x = _mlp(), torch.randn(32, 64)
    elif build == "cnn":
        model, x = SmallCNN(), torch.randn(8, 3, 16, 16)
    else:
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        model, x = (
            nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
            torch.randn(4, 10, 32),
        )
    model, x = model.to(DEVICE), x.to(DEVICE)
    session = torchdoctor.profile(_train_step(model, x), model=model, steps=5, warmup=2)
    _check_tree(session)
    assert session["config"]["device"].startswith(DEVICE.type)


def test_profile_on_cuda_times_with_events():
    require_real_cuda()
    model = _mlp().to(DEVICE)
    session = torchdoctor.profile(_train_step(model, torch.randn(32, 64, device=DEVICE)),
                                  model=model, steps=3, warmup=1)  # fmt: skip
    assert session["config"]["timing"] == "cuda_events"


class _Counter:
    """Counts every host wait the profiler could cause: device/stream/event synchronizes."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for owner, name in (
            (torch.cuda, "synchronize"),
            (torch.cuda.Event, "synchronize"),
            (torch.cuda.Stream, "synchronize"),
        ):
            original = getattr(owner, name)

            def counted(*args, _original=original, _name=f"{owner.__name__}.{name}", **kw):
                self.calls.append(_name)
                return _original(*args, **kw)

            monkeypatch.setattr(owner, name, counted)


def test_profiled_steps_wait_for_the_device_at_most_once_per_step(monkeypatch):
    require_real_cuda()
    model = _mlp(width=256, depth=8).to(DEVICE)  # 17 modules: a sync per hook would be >= 34
    step = _train_step(model, torch.randn(64, 256, device=DEVICE))
    step()
    torch.cuda.synchronize()
    counter = _Counter(monkeypatch)
    steps, warmup = 6, 2
    torchdoctor.profile(step, model=model, steps=steps, warmup=warmup, syncs=False)
    # one resolve per step (warm-up included) plus a constant for start/stop
    assert len(counter.calls) <= steps + warmup + 3, counter.calls


def test_profiled_sync_free_step_raises_nothing_in_sync_debug_error_mode():
    """Under set_sync_debug_mode("error") any synchronizing CUDA call raises: the hooks make none."""
    require_real_cuda()
    model = _mlp(width=128).to(DEVICE)
    x = torch.randn(16, 128, device=DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    prof = torchdoctor.Profiler(model, syncs=False, memory=False)
    previous = torch.cuda.get_sync_debug_mode()
    with prof:
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(4):
                opt.zero_grad(set_to_none=True)
                model(x).pow(2).mean().backward()
                opt.step()
                torch.cuda.set_sync_debug_mode(previous)  # the step boundary resolves events
                prof.step()
                torch.cuda.set_sync_debug_mode("error")
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    assert prof.session is not None and len(prof.session["steps"]) >= 3


def test_device_time_lands_on_the_module_that_runs_it():
    """With events, a big matmul's GPU time is charged to its module, not to whoever syncs next.

    Host timing of an asynchronous step would give each Linear only its launch time (µs) and
    put the device time where the host next waits (the step end).
    """
    require_real_cuda()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.big = nn.Sequential(*(nn.Linear(4096, 4096) for _ in range(4)))
            self.small = nn.Linear(4096, 1)

        def forward(self, x):
            return self.small(self.big(x))

    model = Model().to(DEVICE)
    step = _train_step(model, torch.randn(2048, 4096, device=DEVICE))
    session = torchdoctor.profile(step, model=model, steps=4, warmup=2, syncs=False)
    nodes = {n["path"]: n for n, _ in walk(session["tree"]) if n["kind"] != "self"}
    big = nodes["big"]["total_ms"]["mean"]
    assert big > 0.5 * session["step_ms"]["mean"], (big, session["step_ms"])


def test_planted_item_is_found_with_its_measured_stall():
    require_real_cuda()
    a = torch.randn(4096, 4096, device=DEVICE)
    torch.cuda.synchronize()
    with torchdoctor.sync_audit() as audit:
        for _ in range(3):
            b = a @ a  # queued: the device is busy for milliseconds
            value = b.sum().item()  # the planted sync waits for it
    assert value == value  # read the value (NaN check) so the line is not optimised away
    records = [r for r in audit.records() if r["kind"] == "item"]
    assert records, audit.records()
    record = records[0]
    assert record["file"].endswith("test_cuda_profiler.py")
    assert "item()" in record["op"]
    assert record["stall_ms"] is not None and record["stall_ms"] > 0
    assert audit.summary()["device"].startswith("cuda")


def test_sync_audit_restores_the_sync_debug_mode():
    require_real_cuda()
    torch.cuda.set_sync_debug_mode("default")
    x = torch.ones(3, device=DEVICE)
    with torchdoctor.sync_audit():
        _ = x.sum().item()
    assert torch.cuda.get_sync_debug_mode() == 0


def test_sync_free_step_gives_no_sync_records():
    model = _mlp().to(DEVICE)
    step = _train_step(model, torch.randn(32, 64, device=DEVICE))
    step()
    with torchdoctor.sync_audit() as audit:
        for _ in range(3):
            step()
    assert audit.records() == []


SCRIPT = """\
import torch
device = "{device}"
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
net = net.to(device)
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
x, y = torch.randn(256, 64, device=device), torch.randn(256, 1, device=device)
for step in range(12):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    opt.step()
    if loss.item() < -1:  # line 13: one real sync per step
        break
"""


def test_run_of_an_unmodified_cuda_script(tmp_path: Path):
    script = tmp_path / "train_gpu.py"
    script.write_text(textwrap.dedent(SCRIPT.format(device=DEVICE.type)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torchdoctor", "run", "--out", "prof", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = json.loads((tmp_path / "prof" / "session.json").read_text())
    assert session["config"]["step_boundary"] == "optimizer"
    assert len(session["steps"]) >= 5
    _check_tree(session)
    lines = {r["line"] for r in session["syncs"]}
    assert 13 in lines
    if DEVICE.type == "cuda":
        assert session["config"]["timing"] == "cuda_events"
        assert session["config"]["device"].startswith("cuda")


def test_hot_lines_on_device_name_the_planted_loop_line():
    """Line timing with CUDA events: the per-element solve loop is the hottest line."""
    torch.manual_seed(0)
    net = _mlp(width=64).to(DEVICE)
    x = torch.randn(32, 64, device=DEVICE)
    cov = torch.eye(64, device=DEVICE) + 0.1
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        h = net[:-1](x)
        penalty = sum(h[i] @ torch.linalg.solve(cov, h[i]) for i in range(32))  # SOLVE LOOP
        (net[-1](h).pow(2).mean() + 1e-6 * penalty).backward()
        opt.step()

    session = torchdoctor.profile(step, model=net, steps=4, warmup=2, syncs=False)
    lines = (session.get("hot_lines") or {}).get("lines") or []
    assert lines, "no hot lines recorded"
    top = max(lines, key=lambda r: r["total_ms"]["median"])
    assert top["file"].endswith("test_cuda_profiler.py")
    assert "torch.linalg.solve" in top["code"]
    assert session["config"]["timing"] == (
        "cuda_events" if DEVICE.type == "cuda" else "perf_counter"
    )

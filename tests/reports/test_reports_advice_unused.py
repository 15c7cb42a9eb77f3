"""The unused-outputs rule and its collection: parts of a forward no gradient came back from."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.advice.unused_outputs import unused_outputs

Features = namedtuple("Features", "r1 r2 r3")


class Extractor(nn.Module):
    """A frozen feature extractor returning every stage (fast_neural_style's Vgg16)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Linear(16, 64), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256))
        self.requires_grad_(False)

    def forward(self, x):
        h1 = self.stage1(x)
        h2 = self.stage2(h1)
        return Features(h1, h2, self.stage3(h2))


def _profile(read):
    net, features = nn.Linear(16, 16), Extractor()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torchdoctor.Profiler(net, syncs=False, warmup=1, detail="always") as prof:
        for _ in range(4):
            out = features(net(torch.randn(32, 16)))
            read(out).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    return prof.session


def test_the_stages_after_the_one_the_loss_reads_are_found_and_advised():
    session = _profile(lambda out: out.r2)
    paths = {e["path"] for e in session["unused_outputs"]}
    assert "Extractor.stage3" in paths and "Extractor.stage2" not in paths
    (item,) = unused_outputs(session)
    assert item.title.startswith("Extractor computes stage3 for nothing")
    assert item.confidence == "medium" and item.estimated_saving_ms > 0


def test_a_used_last_stage_leaves_nothing_to_say():
    session = _profile(lambda out: out.r3)
    assert not session.get("unused_outputs") and unused_outputs(session) == []


def test_a_detached_model_is_no_waste():
    """A target network or an EMA teacher: its output detached on purpose, none of its parts
    send gradients back; it is not named."""
    session = _profile(lambda out: out.r3.detach() * torch.ones(1, requires_grad=True))
    assert unused_outputs(session) == []


def test_parts_in_between_are_told_to_run_without_gradients_not_to_go():
    part = {"kind": "module", "path": "m.router", "name": "router", "calls_per_step": 1,
            "forward_ms": {"median": 20.0}, "children": []}
    expert = {"kind": "module", "path": "m.expert", "name": "expert", "calls_per_step": 1,
              "forward_ms": {"median": 50.0}, "children": []}
    model = {"kind": "module", "path": "m", "name": "m", "children": [part, expert]}
    session = {"step_ms": {"median": 100.0}, "tree": {"kind": "root", "children": [model]},
               "unused_outputs": [{"path": "m.router", "steps": 4, "of_steps": 4}]}
    (item,) = unused_outputs(session)
    assert item.confidence == "low" and item.estimated_saving_ms is None
    assert "for nothing" not in item.title and "torch.no_grad()" in item.fix


@pytest.mark.parametrize("bad", [None, [{"path": 3}], ["x"]])
def test_malformed_entries_say_nothing(bad):
    assert unused_outputs({"step_ms": {"median": 1.0}, "unused_outputs": bad}) == []


class Checkpointed(nn.Module):
    """A layer whose parts re-run inside backward (Hugging Face's gradient_checkpointing)."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(128, 512), nn.Linear(512, 128)

    def forward(self, x):
        return torch.utils.checkpoint.checkpoint(lambda h: self.down(self.up(h).relu()), x,
                                                 use_reentrant=False)  # fmt: skip


def test_parts_re_run_inside_backward_are_not_called_unused():
    """Activation checkpointing drops the first forward's outputs: the gradient goes through
    the re-run's, so none comes back through the outputs seen. A TRL SFT run was told to stop
    each Llama layer's forward before its attention."""
    model = nn.Sequential(Checkpointed(), Checkpointed())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torchdoctor.Profiler(model, syncs=False, warmup=1, detail="always") as prof:
        for _ in range(4):
            model(torch.randn(256, 128)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    session = prof.session
    assert {"0.up", "1.up"} <= {e["path"] for e in session["unused_outputs"]}
    assert unused_outputs(session) == []

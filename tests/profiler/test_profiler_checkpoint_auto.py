"""Activation checkpointing under an automatic step boundary: the forward re-run inside the
backward pass is no outermost module call (no step begins there), and the profiler's
saved-tensor hooks never go on top of the checkpoint's own (Hugging Face's
gradient_checkpointing=True under `run` raised CheckpointError)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import torchdoctor


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 32)
        self.out = nn.Linear(32, 16)

    def forward(self, x):
        return x + self.out(torch.tanh(self.fc(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Layer() for _ in range(6)])

    def forward(self, x):
        for layer in self.layers:  # as Hugging Face's GradientCheckpointingLayer does
            x = checkpoint(layer, x, use_reentrant=False)
        return x.pow(2).mean()


def test_checkpointed_layers_under_an_auto_boundary_after_a_warm_up_step():
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with torchdoctor.Profiler(step_boundary="auto", warmup=1, syncs=False) as prof:
        for _ in range(8):
            for _ in range(2):  # gradient accumulation: two micro-batches per optimizer step
                net(torch.randn(4, 16)).backward()
            opt.step()
            opt.zero_grad()
    session = prof.session
    assert session.get("error") is None
    assert session["config"]["step_boundary"] == "optimizer"
    assert len(session["steps"]) >= 6
    [model] = [c for c in session["tree"]["children"] if c["path"] == "Net"]
    assert model["calls_per_step"] == 2.0  # the recomputations are no calls of their own


def test_hugging_face_gradient_checkpointing_under_an_auto_boundary():
    """The case that raised CheckpointError: the recomputations of the checkpointed blocks ran
    at depth 0 before the first backward returned, were taken for an inference loop's steps,
    and a step began inside the recomputation, pushing the saved-tensor hooks on top of the
    checkpoint's own."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=128, n_positions=32, n_embd=32, n_layer=4,
                                     n_head=2)  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 128, (2, 16))
    with torchdoctor.Profiler(step_boundary="auto", warmup=1, syncs=False) as prof:
        for _ in range(6):
            for _ in range(2):
                model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
    session = prof.session
    assert session.get("error") is None
    assert session["config"]["step_boundary"] == "optimizer"
    [top] = [c for c in session["tree"]["children"] if c["path"] == "GPT2LMHeadModel"]
    assert top["calls_per_step"] == 2.0


def test_reentrant_checkpointing_gives_the_recompute_and_backward_to_the_block():
    """use_reentrant=True runs the block's forward under no_grad (nothing to hook) and again,
    with grad, inside the backward: that recompute and its backward are the block's backward,
    not the step's own time."""
    torch.manual_seed(0)
    inp = nn.Linear(64, 64)
    block = nn.Sequential(nn.Linear(64, 1024), nn.GELU(), nn.Linear(1024, 64))
    head = nn.Linear(64, 1)
    x = torch.randn(2048, 64)
    with torchdoctor.Profiler(detail="always", syncs=False, hot_lines=False) as prof:
        for _ in range(6):
            h = checkpoint(block, inp(x), use_reentrant=True)
            head(h).sum().backward()
            prof.step()
    nodes = {n["path"]: n for n, _ in _walk(prof.session["tree"])}
    block_backward = nodes["Sequential"]["backward_ms"]["mean"]
    own = nodes["(self)"]["backward_ms"]["mean"]  # the step's backward no module claimed
    assert block_backward > 3 * own, (block_backward, own)


def _walk(tree):
    from torchdoctor.session_read import walk

    return walk(tree)


def test_the_recomputation_is_measured_on_the_checkpointed_layers_inside_their_model():
    """Net's layers are checkpointed inside Net.forward: their forward re-run in backward
    (outside Net's frame) is the same tree node's, counted as `recomputed_ms` (part of its
    backward, not of its forward), and the activation-checkpointing advice states its cost."""
    from torchdoctor.analyze.advice import advise

    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with torchdoctor.Profiler(detail="always", syncs=False, hot_lines=False) as prof:
        for _ in range(6):
            net(torch.randn(256, 16)).backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    nodes = {n["path"]: n for n, _ in _walk(prof.session["tree"])}
    layers = [nodes[f"layers.{i}"] for i in range(6)]
    tops = [c["path"] for c in prof.session["tree"]["children"]]
    assert tops == ["Net", "(self)"] and not any("#" in p for p in nodes)  # no stray nodes
    for layer in layers:
        recomputed = layer["recomputed_ms"]["mean"]
        assert 0 < recomputed <= layer["backward_ms"]["mean"]
        # one re-run, not counted as forward (medians: one slow step must not fail it)
        assert layer["recomputed_ms"]["median"] < 3 * layer["forward_ms"]["median"]
    [advice] = [a for a in advise(prof.session) if a.rule == "activation-checkpointing"]
    total = sum(layer["recomputed_ms"]["mean"] for layer in layers)
    assert advice.saving_range_ms == pytest.approx([total / 2, total])

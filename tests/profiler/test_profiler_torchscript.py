"""A TorchScript model (torch.jit.script, torch.jit.load) is one node: its sub-modules run in
TorchScript, where no hook sees them. The tree read "RecursiveScriptModule" and the advice
"A single module without sub-modules: torch.compile it"; now the node is the original class,
marked, and the advice says why its parts are unseen and what replaces TorchScript."""

from __future__ import annotations

import warnings

import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.advice.dominant import dominant_module


def _scripted() -> nn.Module:
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(),
                        nn.Linear(64, 8))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (torch.jit.script's notice)
        return torch.jit.script(net)


def test_a_scripted_model_reads_as_its_class_and_is_told_what_replaces_torchscript():
    torch.manual_seed(0)
    net, eager = _scripted(), nn.Linear(8, 8)  # (an eager module beside it: a near miss)
    opt = torch.optim.SGD([*net.parameters(), *eager.parameters()], lr=0.01)
    x = torch.randn(512, 64)
    with torchdoctor.Profiler(syncs=False, step_boundary="auto") as prof:
        for _ in range(12):
            eager(net(x)).sum().backward()
            opt.step()
            opt.zero_grad()
    tops = {c["type"]: c for c in prof.session["tree"]["children"] if c["kind"] == "module"}
    assert "Sequential (TorchScript)" in tops and "Linear" in tops, sorted(tops)
    assert not any("RecursiveScriptModule" in t for t in tops)
    (item,) = [a for a in dominant_module(prof.session) if "TorchScript" in a.title]
    assert "its parts unseen" in item.title and "torch.compile" in item.fix
    assert "without sub-modules" not in item.fix

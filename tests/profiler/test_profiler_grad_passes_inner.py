"""Gradient passes of an inner optimization loop (MAML's adaptation steps: higher's
diffopt.step runs torch.autograd.grad after each forward of the adapted model) were told
"batch them" with is_grads_batched, which batches vectors over one graph: each pass here
differentiates a new forward. A line's passes that follow a new module call are told so; a
loop over one output's rows, after one forward, is still told to batch them."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

import torchdoctor
from torchdoctor.analyze.advice.grad_passes import grad_passes


def _session(inner_loop: bool):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 128), nn.Tanh(), nn.Linear(128, 16))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    with torchdoctor.Profiler(syncs=False, hot_lines=False, detail="always",
                              step_boundary="auto") as prof:  # fmt: skip
        for _ in range(6):
            opt.zero_grad()
            for _task in range(3):
                x = torch.randn(32, 16)
                params = dict(net.named_parameters())
                if inner_loop:  # MAML: four adaptation steps, each after a forward
                    for _step in range(4):
                        loss = functional_call(net, params, (x,)).pow(2).mean()
                        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
                        params = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
                    functional_call(net, params, (x,)).pow(2).mean().backward()
                else:  # one forward, then a row of the Jacobian per pass
                    y = net(x).sum(0)
                    for i in range(12):
                        torch.autograd.grad(y[i], list(net.parameters()), retain_graph=True)
                    y.sum().backward()
            opt.step()
    return prof.session


def test_an_inner_loops_passes_each_follow_a_new_forward():
    session = _session(inner_loop=True)
    (row,) = session["grad_passes"]
    assert row["passes_per_step"] == 12 and row["after_forward"] == 1.0
    (item,) = grad_passes(session)
    assert item.title.endswith("each after a new forward")
    assert "does not apply" in item.fix and "torch.func.vmap" in item.fix


def test_rows_of_one_forward_are_still_batched():
    session = _session(inner_loop=False)
    (row,) = session["grad_passes"]
    assert row["passes_per_step"] == 36 and row["after_forward"] <= 0.25
    (item,) = grad_passes(session)
    assert item.title.endswith("batch them") and "is_grads_batched" in item.fix

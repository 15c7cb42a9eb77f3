"""Modules that run only inside backward (a custom autograd Function's backward calls the
model: torchdiffeq's odeint_adjoint integrates backward in time through fresh wrappers of
the dynamics) are no activation checkpointing: the ODE demo read "Activation checkpointing
re-runs 44% of the step ...: checkpoint less if memory allows". A checkpointed layer, run in
the forward and again in backward, is still told as checkpointing."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import torchdoctor
from torchdoctor.analyze.advice.checkpointing import activation_checkpointing


class Wrap(nn.Module):  # a fresh wrapper per backward, as torchdiffeq's _PerturbFunc
    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, y):
        return self.f(y)


class Adjoint(torch.autograd.Function):
    """y = x + 0.1 f(x), five times, without a graph; backward re-integrates with a vjp."""

    @staticmethod
    def forward(ctx, x, f, *params):
        ctx.f, ctx.params = f, params
        with torch.no_grad():
            for _ in range(5):
                x = x + 0.1 * f(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        wrap, grads = Wrap(ctx.f), [torch.zeros_like(p) for p in ctx.params]
        for _ in range(5):
            with torch.enable_grad():
                y = y.detach().requires_grad_()
                out = wrap(y)
                dy, *dp = torch.autograd.grad(out, (y, *ctx.params), grad)
            grad = grad + 0.1 * dy
            grads = [g + 0.1 * d for g, d in zip(grads, dp)]
        return (grad, None, *grads)


def _session(adjoint: bool):
    torch.manual_seed(0)
    f = nn.Sequential(nn.Linear(8, 256), nn.Tanh(), nn.Linear(256, 8))
    opt = torch.optim.SGD(f.parameters(), lr=1e-3)
    with torchdoctor.Profiler(syncs=False, hot_lines=False, detail="always",
                              step_boundary="auto") as prof:  # fmt: skip
        for _ in range(8):
            x = torch.randn(64, 8, requires_grad=True)
            if adjoint:
                y = Adjoint.apply(x, f, *f.parameters())
            else:
                y = checkpoint(f, x, use_reentrant=False)
            y.pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    return prof.session


def test_a_custom_backward_calling_the_model_is_no_checkpointing():
    (item,) = activation_checkpointing(_session(adjoint=True))
    assert item.title.startswith("A custom backward calls the model: Wrap run only inside")
    assert item.estimated_saving_ms is None and "odeint_adjoint" in item.fix


def test_a_checkpointed_model_is_still_checkpointing():
    (item,) = activation_checkpointing(_session(adjoint=False))
    assert item.title.startswith("Activation checkpointing re-runs")

"""Shared loops for the profiler tests."""

import torch

import torchdoctor


def backward_steps(net: torch.nn.Module, x: torch.Tensor, steps: int) -> dict:
    """``steps`` forward + backward passes of ``net`` on ``x``, each a profiled step in full
    detail (no sync audit, no hot lines); the session as a dict."""
    with torchdoctor.Profiler(net, detail="always", syncs=False, hot_lines=False) as prof:
        for _ in range(steps):
            net(x).sum().backward()
            prof.step()
    return prof.session.to_dict()


def sine_fit(width: int, rows: int):
    """A small tanh MLP fitting sin(sum(x)) on ``rows`` random points, and the closure an
    optimizer's ``step(closure)`` takes (it zeroes the net's gradients itself)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, width), torch.nn.Tanh(),
                              torch.nn.Linear(width, 1))  # fmt: skip
    x = torch.randn(rows, 10)
    y = torch.sin(x.sum(1, keepdim=True))

    def closure():
        net.zero_grad()
        loss = (net(x) - y).pow(2).mean()
        loss.backward()
        return loss

    return net, closure

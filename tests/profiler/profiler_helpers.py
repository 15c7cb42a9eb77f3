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

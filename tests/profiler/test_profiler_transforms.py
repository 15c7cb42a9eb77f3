"""torch.func transforms inside profiled steps: they refuse saved-tensor hooks, which the
profiler pushes in the step that counts activation bytes (collect/install.py)."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import torchdoctor


def test_per_sample_gradients_run_in_the_step_that_counts_activation_bytes():
    model = nn.Linear(8, 1)
    params = {k: v.detach() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss(p, x, y):
        return ((functional_call(model, p, (x,)) - y) ** 2).mean()

    with torchdoctor.Profiler(model, syncs=False) as prof:
        for _ in range(3):
            x, y = torch.randn(16, 8), torch.randn(16, 1)
            per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x[:, None], y[:, None])
            model(x).sub(y).pow(2).mean().backward()  # the profiled module's own step
            opt.step()
            opt.zero_grad()
            prof.step()
    assert per_sample["weight"].shape == (16, 1, 8)
    session = prof.session
    assert session.get("error") is None and len(session["steps"]) == 3
    # the first step counted activation bytes: the hooks were on, and are off again
    assert session["tree"]["children"][0]["path"] == "Linear"
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None

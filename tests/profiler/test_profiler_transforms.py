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


def test_a_step_cut_at_a_transforms_own_autograd_grad_runs_and_is_cut_once():
    """Opacus-style per-sample gradients with a manual update and no optimizer: steps end at
    backward passes, here torch.func.grad's own torch.autograd.grad. Beginning the step that
    counts activation bytes there (inside the transform) cannot push saved-tensor hooks; and
    under the sync audit's and the hot lines' modes, grad is dispatched to the mode and back
    through the profiler's wrapper: still one pass, one step per iteration."""
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, x, y):
        return ((functional_call(model, p, (x.unsqueeze(0),)) - y) ** 2).mean()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    iterations, warmup = 8, 1
    with torchdoctor.Profiler(model, step_boundary="auto", warmup=warmup) as prof:
        for _ in range(iterations):
            grads = per_sample(params, torch.randn(16, 6), torch.randn(16, 1))
            with torch.no_grad():
                for key in params:
                    params[key] -= 0.01 * grads[key].mean(0)
    session = prof.session
    assert session.get("error") is None
    assert session["config"]["step_boundary"] == "backward"
    # one step per iteration: the second pass decides the boundary (the first iteration's
    # partial step is dropped), then warm-up
    assert len(session["steps"]) == iterations - 2 - warmup
    # each step holds one whole iteration: the model's one call per step, forward and backward
    (sequential,) = session["tree"]["children"][:1]
    assert sequential["path"] == "Sequential" and sequential["calls_per_step"] == 1
    assert sequential["backward_ms"]["median"] > 0
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None


def test_autograd_grad_under_a_function_mode_is_one_pass():
    from torch.overrides import TorchFunctionMode

    from torchdoctor.collect.install import Installation

    class PassThrough(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    events: list[str] = []
    hooks = Installation()
    hooks.wrap_autograd(lambda *_: events.append("enter"), lambda: events.append("leave"))
    try:
        x = torch.ones(3, requires_grad=True)
        with PassThrough():
            (g,) = torch.autograd.grad((x * x).sum(), x)
    finally:
        hooks.remove()
    assert events == ["enter", "leave"] and g.tolist() == [2.0, 2.0, 2.0]

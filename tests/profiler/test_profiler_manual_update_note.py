"""The note that no_grad blocks between backward() calls are the (hand-written) optimizer
phase is made when such a block is followed by a backward(), not for an evaluation after the
last one (pytorch/examples word_language_model updates p.data without no_grad)."""

import torch

import torchdoctor


def _train(steps, update_under_no_grad):
    """A tensors-only loop (no module, no optimizer: steps end at backward())."""
    torch.manual_seed(0)
    w = torch.randn(6, 1, requires_grad=True)
    x, y = torch.randn(64, 6), torch.randn(64, 1)
    with torchdoctor.Profiler(syncs=False, step_boundary="auto") as prof:
        for _ in range(steps):
            (x @ w - y).pow(2).mean().backward()
            if update_under_no_grad:
                with torch.no_grad():
                    w -= 0.1 * w.grad
            else:
                w.data.add_(w.grad, alpha=-0.1)
            w.grad = None
        with torch.no_grad():  # an evaluation after the last backward
            (x @ w - y).pow(2).mean()
    return [n for n in prof.session["config"]["notes"] if "hand-written update" in n]


def test_an_evaluation_after_the_last_backward_is_no_hand_written_update():
    assert _train(8, update_under_no_grad=False) == []


def test_a_no_grad_update_between_backwards_is_noted_once():
    assert len(_train(8, update_under_no_grad=True)) == 1


def test_once_an_optimizer_steps_no_grad_blocks_are_no_longer_watched():
    """Only a loop without an optimizer can update by hand under no_grad: after the first
    optimizer.step() the wrapper steps aside (an RL rollout opens a block per environment step,
    each one paid for in every light step), with the profiler still running."""
    original = torch.autograd.grad_mode.no_grad.__dict__["__enter__"]
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3)
    with torchdoctor.Profiler(syncs=False, step_boundary="auto") as prof:
        with torch.no_grad():  # a block before any optimizer: watched
            model(x)
        watched = torch.autograd.grad_mode.no_grad.__dict__["__enter__"] is not original
        for _ in range(4):
            with torch.no_grad():
                model(x)
            model(x).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        after = torch.autograd.grad_mode.no_grad.__dict__["__enter__"]
    assert watched and after is original
    assert torch.autograd.grad_mode.no_grad.__dict__["__enter__"] is original  # (and at exit)
    assert prof.session["phases"]["optimizer"]["median"] > 0

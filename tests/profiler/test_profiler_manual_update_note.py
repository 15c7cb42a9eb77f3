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

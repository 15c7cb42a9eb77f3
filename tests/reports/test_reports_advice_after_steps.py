"""Rule after-steps: the model calls after the last step (a final generation) counted by the
profiler, with autograd on and in training mode (analyze/advice/after_steps.py)."""

from __future__ import annotations

import pytest
import torch
from reports_sessions_crafted import after_steps_session
from torch import nn

import torchdoctor
from torchdoctor.analyze.advice.after_steps import after_steps


def test_a_final_generation_in_training_mode_with_autograd_on_is_told():
    (item,) = after_steps(after_steps_session())
    assert item.title.startswith("After the last step, 500 model calls with autograd on and "
                                 "in training mode took 6,060 ms (10% of the run)")
    assert "model.eval()" in item.fix and "torch.no_grad()" in item.fix
    assert item.estimated_saving_ms is None and item.heat > 0.1


def test_silent_when_it_runs_as_inference_already_or_is_a_sliver_of_the_run():
    assert after_steps(after_steps_session(eval_calls=500, grad_calls=0)) == []
    session = after_steps_session()
    session["config"]["run_time"]["after_ms"] = 1_000.0  # 2% of the run
    assert after_steps(session) == []
    (only_grad,) = after_steps(after_steps_session(eval_calls=500))
    assert "with autograd on took" in only_grad.title


def test_the_profiler_counts_the_model_calls_after_the_last_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.Linear(8, 8))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with torchdoctor.Profiler(syncs=False, step_boundary="auto", warmup=1) as prof:
        for _ in range(8):
            net(torch.randn(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
        x = torch.randn(1, 8)
        for _ in range(5):  # a "generation" after the loop: train mode, autograd on
            x = net(x)
        net.eval()
        with torch.no_grad():
            net(x)
    calls = prof.session["config"]["run_time"]["after_calls"]
    assert calls == {"model_calls": 6, "eval_calls": 1, "grad_calls": 5}


def test_training_mode_is_moot_without_dropout_or_batch_norm_in_the_tree():
    """dlrm's MLPs have neither: its evaluation after the loop was told 'in training mode
    (dropout active ...)', and forward-forward's model.eval() raised (it overrides train())."""
    session = after_steps_session(grad_calls=0)
    session["tree"] = {"kind": "root", "children": [
        {"kind": "module", "path": "mlp", "type": "Sequential", "children": [
            {"kind": "module", "path": "mlp.0", "type": "Linear"}]}]}
    assert after_steps(session) == []
    session["tree"]["children"][0]["children"].append(
        {"kind": "module", "path": "mlp.1", "type": "Dropout"})
    (item,) = after_steps(session)
    assert "in training mode" in item.title


def test_calls_that_are_a_small_part_of_the_time_after_the_steps_say_so():
    """dlrm's final evaluation: 1.5 s after the loop, of which its 60 model calls ~0.15 s; the
    rest made the test batches, which eval mode and no_grad leave as they are."""
    session = after_steps_session(eval_calls=500)
    session["tree"] = {"kind": "root", "forward_ms": {"mean": 2.0}, "children": []}
    session["steps"] = [{"index": i, "detailed": True, "model_calls": 1} for i in range(5)]
    (item,) = after_steps(session)
    assert item.title == ("After the last step, 6,060 ms (10% of the run) with 500 model calls "
                          "with autograd on, about 1,000 ms of it")
    assert item.heat == pytest.approx(1_000.0 / 57_800.0)


def test_a_loss_module_left_in_training_mode_is_not_the_model_in_training_mode():
    """torchvision's classification reference: after the last step its evaluate() runs the
    model in eval mode and `criterion(output, target)`, an outermost CrossEntropyLoss never put
    in eval mode: 20 calls, 10 in eval mode, were told as 10 in training mode."""
    session = after_steps_session(eval_calls=10, grad_calls=0)
    session["config"]["run_time"]["after_calls"]["model_calls"] = 20
    model = {"kind": "module", "path": "net", "name": "net", "type": "MobileNetV3",
             "calls_per_step": 1.0, "children": [{"kind": "module", "path": "net.bn",
                                                  "type": "BatchNorm2d", "children": []}]}
    loss = {"kind": "module", "path": "loss", "name": "loss", "type": "CrossEntropyLoss",
            "calls_per_step": 1.0, "children": []}
    session["tree"] = {**session["tree"], "children": [model, loss]}
    assert after_steps(session) == []
    session["config"]["run_time"]["after_calls"]["eval_calls"] = 0  # (the model too)
    (item,) = after_steps(session)
    assert "10 of them ran with the model in training mode" in " ".join(item.evidence)


def test_the_snippet_adds_only_what_is_missing_and_names_no_generate_it_did_not_see():
    """NCF's per-user evaluation after its last epoch ran in eval mode with autograd on: its
    snippet said `model.eval()` and `model.generate(context, max_new_tokens=500)`; the
    ng-video-lecture shape (training mode too) keeps `model.eval()` (near miss)."""
    (evaluation,) = after_steps(after_steps_session(eval_calls=500))
    assert "model.eval()" not in evaluation.code and "torch.no_grad()" in evaluation.code
    assert "generate(context" not in evaluation.code
    (generation,) = after_steps(after_steps_session())
    assert generation.code.startswith("model.eval()\nwith torch.no_grad():")

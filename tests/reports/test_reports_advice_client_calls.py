"""Advice sized from what the remedy removes, as clients round 13 ran them: a repeated call's
own time (pytorch/examples GAT), one wait for loaders restarting in the same steps
(pytorch/examples super_resolution), the optimizer class advised (timm's benchmark.py), a cited measurement's words kept in an
inference run's wording (timm's validate.py), a conv net's bf16 bound (super_resolution)."""

from __future__ import annotations

import pytest
from reports_sessions import optimizer_session
from reports_sessions_crafted import respawn_session

from torchdoctor.analyze.advice.base import Advice
from torchdoctor.analyze.advice.knobs import engine_knobs, for_inference
from torchdoctor.analyze.advice.optimizer_step import optimizer_step
from torchdoctor.analyze.advice.recompute import loop_invariant
from torchdoctor.analyze.advice.worker_respawn import worker_respawn

MAIN = "/w/gat/main.py"


def _gat_session(call_lines: list[dict]) -> dict:
    # one training forward (line 262), then two evaluations under no_grad (line 280), the second
    # identical to the first: the module's mean per call mixes the training forward in
    record = {
        "path": "GAT", "calls_per_step": 3.0, "identical_input_calls": 1.0,
        "time_per_call_ms": 1368.0, "source": {"file": MAIN, "line": 184},
        "call_site": {"file": MAIN, "line": 262, "function": "train_iter"},
        "repeat_site": {"file": MAIN, "line": 280, "function": "test"},
    }
    return {"recomputation": [record], "step_ms": {"median": 5000.0}, "call_lines": call_lines}


def test_a_repeated_evaluation_call_is_sized_by_its_own_line_not_the_mean_with_training():
    lines = [
        {"file": MAIN, "line": 262, "modules": ["GAT"], "ms_per_step": 2544.0,
         "calls_per_step": 1.0},
        {"file": MAIN, "line": 280, "modules": ["GAT"], "ms_per_step": 1560.0,
         "calls_per_step": 2.0},
    ]
    (advice,) = loop_invariant(_gat_session(lines))
    assert round(advice.estimated_saving_ms) == 780
    assert any("780 ms per call" in e and "1,368 ms" in e for e in advice.evidence)


def test_without_the_repeating_lines_measure_the_modules_mean_per_call_stays():
    (advice,) = loop_invariant(_gat_session([]))
    assert round(advice.estimated_saving_ms) == 1368


def test_a_repeating_line_that_calls_other_modules_too_is_not_used():
    lines = [{"file": MAIN, "line": 280, "modules": ["GAT", "criterion"], "ms_per_step": 1560.0,
              "calls_per_step": 2.0}]
    (advice,) = loop_invariant(_gat_session(lines))
    assert round(advice.estimated_saving_ms) == 1368


def _with_evaluation_loader(starts: list[int]) -> dict:
    # pytorch/examples super_resolution: the test loader (2 workers, not persistent) is iterated
    # between the epochs' last and first steps, so its restarts land in the steps where the
    # training loader's do; the data phase of those steps holds both waits once
    session = respawn_session(starts=(8, 16, 24, 32), iterators=5)
    evaluation = {"num_workers": 2, "persistent_workers": False, "pin_memory": False,
                  "site": {"file": "/w/train.py", "function_line": 30, "line": 33},
                  "iterators": len(starts), "steps": len(starts), "starts": starts}
    loaders = session["environment"]["data_loaders"]
    session["environment"]["data_loaders"] = [evaluation, *loaders]  # (listed first)
    return session


def test_an_evaluation_loader_restarting_in_the_training_loaders_steps_is_one_wait_named_once():
    (item,) = worker_respawn(_with_evaluation_loader([8, 16, 24, 32]))
    assert "train.py:12" in item.title  # (the loader that fed the steps)
    assert item.estimated_saving_ms == pytest.approx(4 * 98.0 / 40)
    measured = [e for e in item.evidence if "more for data than the other steps" in e]
    assert len(measured) == 1  # (the same steps' excess is not told twice)
    assert any("train.py:33" in e and "same steps" in e for e in item.evidence)


def test_an_evaluation_loader_restarting_in_other_steps_keeps_its_own_advice():
    session = _with_evaluation_loader([3, 4, 11])
    for step in session["steps"]:
        if step["index"] == 11:
            step["phases"]["data"] = 100.0
    items = worker_respawn(session)
    assert sorted(i.title.split("(")[1].split(")")[0] for i in items) == ["train.py:12", "train.py:33"]


def test_the_fused_optimizer_advice_refers_to_the_optimizer_class_it_advises():
    # timm's benchmark.py builds SGD with momentum: the reference was torch.optim.AdamW
    session = optimizer_session()
    session["environment"]["optimizers"][0].update(type="SGD", momentum=0.9)
    (item,) = optimizer_step(session)
    assert "SGD" in item.title
    assert item.references == ["torch.optim.SGD"]


def test_inference_wording_keeps_what_a_cited_measurement_measured():
    # timm's validate.py (no backward): "a linear layer's forward + backward at ViT-tiny's
    # shapes" was rewritten to "a linear layer's the forward passes at ViT-tiny's shapes"
    item = Advice(rule="engine-knobs", title="Run forward and backward under CPU bf16 autocast",
                  evidence=["up to 3.5x on its matrix multiplies (0.143 ms: bf16 autocast on an AMX "
                            "CPU: a linear layer's forward + backward at ViT-tiny's shapes 3.31x), "
                            "1.45x on the rest of forward + backward"])
    for_inference(item)
    assert "a linear layer's forward pass with its gradients at ViT-tiny's shapes" in item.evidence[0]
    assert item.evidence[0].endswith("1.45x on the rest of the forward passes")
    assert "'s the forward passes" not in item.evidence[0]


def test_a_conv_nets_bf16_bound_takes_its_convolutions_at_their_own_measured_speedup():
    # pytorch/examples super_resolution: convolutions 400 ms of a 460 ms step; told "up to
    # 124 ms" (1.45x), bf16 autocast took the step from 471 to 188 ms (2.5x)
    tree = {"kind": "root", "children": [
        {"kind": "module", "type": "Conv2d", "path": "conv2", "total_ms": {"mean": 400.0},
         "calls_per_step": 1, "forward_ms": {"mean": 130.0}, "children": []},
        {"kind": "module", "type": "ReLU", "path": "relu", "total_ms": {"mean": 40.0},
         "calls_per_step": 3, "forward_ms": {"mean": 20.0}, "children": []}]}  # fmt: skip
    session = {"step_ms": {"median": 460.0, "mean": 460.0}, "tree": tree,
               "phases": {"forward": {"median": 160.0}, "backward": {"median": 290.0}},
               "environment": {"device": "cpu", "bf16_native": True}}  # fmt: skip
    (item,) = [a for a in engine_knobs(session) if "autocast" in a.title]
    assert item.saving_range_ms[1] == pytest.approx(400.0 * (1 - 1 / 2.5), rel=0.01)
    assert "up to 2.5x on its convolutions (400 ms" in item.evidence[1]
    # a depthwise convolution gains nothing from bf16 on a CPU (suite fused, bf16_convs:
    # 0.93x-0.95x): it counts as the rest of the step, not at the convolutions' 2.5x
    tree["children"][0]["conv"] = {"groups": 64, "in_channels": 64}
    (depthwise,) = [a for a in engine_knobs(session) if "autocast" in a.title]
    assert depthwise.saving_range_ms[1] < 400.0 * (1 - 1 / 1.5)
    assert "on its convolutions" not in depthwise.evidence[1]
    tree["children"][0]["conv"] = {"pointwise": True}  # (a 1x1 one: 1.05x-1.36x there)
    (pointwise,) = [a for a in engine_knobs(session) if "autocast" in a.title]
    assert pointwise.saving_range_ms == depthwise.saving_range_ms


def test_a_repeat_made_inside_a_library_module_is_not_told_to_hoist():
    # PyG's link_pred.py with SAGEConv: conv1's lin_r(x) gets the same x in the three encodes of
    # a step (train, validation, test: different edges), from sage_conv.py's own forward
    site = {"file": "/v/site-packages/torch_geometric/nn/conv/sage_conv.py", "line": 139,
            "function": "forward", "code": "out = out + self.lin_r(x_r)"}
    record = {"path": "conv1.lin_r", "calls_per_step": 3.0, "identical_input_calls": 1.0,
              "time_per_call_ms": 34.6, "call_site": site,
              "source": {"file": "/v/site-packages/torch_geometric/nn/dense/linear.py"}}
    assert loop_invariant({"recomputation": [record], "step_ms": {"median": 450.0}}) == []
    # near misses: the user's own line repeats the call (GAT), a weight parametrization
    # recomputed by torch's own code (told parametrize.cached())
    assert len(loop_invariant(_gat_session([]))) == 1
    torch_site = {"file": "/v/site-packages/torch/nn/utils/parametrize.py", "line": 390}
    weight = dict(record, path="a.parametrizations.weight.0", call_site=torch_site,
                  source={"file": "/v/site-packages/torch/nn/utils/parametrize.py"})
    (advice,) = loop_invariant({"recomputation": [weight], "step_ms": {"median": 450.0}})
    assert "parametrize.cached" in advice.fix

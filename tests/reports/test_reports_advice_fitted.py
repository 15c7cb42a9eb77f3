"""Advice fitted to what the run used: the DataLoaders' settings, Lightning's logging."""

from __future__ import annotations

import pytest
from reports_sessions import slow_session

from torchdoctor.analyze.advice.data_phase import data_loading


def _loaders(*settings, cpus=8):
    session = slow_session()
    session["environment"] = {"data_loaders": list(settings), "cpus": cpus}
    (item,) = data_loading(session)
    return item


def test_data_loading_fix_follows_the_loaders_the_run_used():
    # no DataLoader seen (a hand-written iterator): the generic remedy
    assert "overlap it with DataLoader workers" in data_loading(slow_session())[0].title
    # num_workers=0: load in workers, sized to the cores this process may use
    item = _loaders({"num_workers": 0, "persistent_workers": False, "iterators": 1}, cpus=4)
    assert "num_workers=0" in item.title and "num_workers=3" in item.fix
    assert any("num_workers=0, persistent_workers=False" in line for line in item.evidence)
    # workers without persistence, iterated over several epochs: they restart every epoch
    item = _loaders({"num_workers": 4, "persistent_workers": False, "iterators": 3})
    assert "restart at every epoch" in item.title and "persistent_workers=True" in item.fix
    assert any("iterated 3x" in line for line in item.evidence)
    # one epoch, or persistent workers: the workers do not keep up
    room = _loaders({"num_workers": 4, "persistent_workers": False, "iterators": 1})
    assert "4 workers do not keep up" in room.title and "above 4" in room.fix
    item = _loaders({"num_workers": 8, "persistent_workers": True, "iterators": 1}, cpus=8)
    assert "8 workers do not keep up" in item.title
    assert "already use every core" in item.fix and "above" not in item.fix
    # ... workers on every core already: more cannot hide the loading, no stated saving
    assert item.estimated_saving_ms is None and item.confidence == "low"
    # more workers than cores (minGPT's Trainer, 4 workers, on 2 cores): one core left
    over = _loaders({"num_workers": 4, "persistent_workers": False, "iterators": 1}, cpus=2)
    assert "more than the 2 cores" in over.fix and "num_workers=1," in over.code
    # a new DataLoader per epoch: each iterator starts new workers, a few steps wait long
    session = slow_session()
    session["environment"] = {"cpus": 8, "data_loaders": [
        {"num_workers": 2, "persistent_workers": False, "iterators": 1},
        {"num_workers": 2, "persistent_workers": True, "iterators": 1}]}  # fmt: skip
    session["phases"]["data"] = {"median": 1.0, "max": 400.0, "mean": 40.0}
    (spiky,) = data_loading(session)
    assert "restart at every epoch" in spiky.title and "once" in spiky.fix
    assert "median 1 ms, slowest 400 ms" in spiky.evidence[0]
    # the same saving whatever the remedy, while workers can still hide the loading
    assert room.estimated_saving_ms == data_loading(slow_session())[0].estimated_saving_ms
    assert spiky.estimated_saving_ms is not None


def test_a_lightning_log_line_gets_the_log_less_often_cure_with_its_arithmetic_saving():
    from torchdoctor.analyze.advice.hot_lines import hot_line_advice

    site = "/env/lib/python3.11/site-packages/lightning/fabric/utilities/apply_func.py"
    row = {"file": "/a/gan.py", "line": 21, "location": "gan.py:21", "owner": "",
           "function": "training_step", "code": 'self.log_dict({"ld": ld}, prog_bar=True)',
           "total_ms": {"mean": 2.0}, "forward_ms": {"mean": 2.0}, "backward_ms": {"mean": 0.0},
           "calls_per_step": 1, "torch_calls_per_step": 40, "top_ops": [],
           "via": [{"file": site, "line": 104, "function": "batch_to", "ms": 1.0}]}  # fmt: skip
    (item,) = hot_line_advice({"step_ms": {"mean": 10.0}, "hot_lines": {"lines": [row]}})
    assert "self.log" in item.title and "on_epoch=True" in item.fix
    assert item.estimated_saving_ms == pytest.approx(2.0 * (1 - 1 / 10))  # 1 step in 10
    plain = {**row, "via": []}  # the same text without Lightning underneath: no such cure
    (other,) = hot_line_advice({"step_ms": {"mean": 10.0}, "hot_lines": {"lines": [plain]}})
    assert "self.log" not in other.title


def test_a_numbered_module_is_named_with_its_type():
    """A model built as nn.Sequential has children "0", "1", "2": "2 dominates the step"
    said nothing; its type does."""
    from torchdoctor.analyze.advice.dominant import dominant_module

    def node(path, type_name, ms, children=()):
        return {"kind": "module", "path": path, "name": path.rsplit(".", 1)[-1],
                "type": type_name, "total_ms": {"median": ms}, "forward_ms": {"median": ms},
                "children": list(children)}  # fmt: skip

    conv = node("2.0", "Conv2d", 2.0)
    block = node("2", "Sequential", 6.0, [conv, node("2.1", "BatchNorm2d", 2.0),
                                          node("2.2", "ReLU", 2.0)])  # fmt: skip
    tree = {"kind": "root", "path": "", "total_ms": {"median": 10.0},
            "children": [node("0", "Conv2d", 1.0), block]}  # fmt: skip
    titles = [a.title for a in dominant_module({"step_ms": {"median": 10.0}, "tree": tree})]
    assert titles and titles[0].startswith("2 (Sequential) dominates the step"), titles
    # under the model's own row (a script's nn.Sequential, profiled without model=): whose "0"
    model = node("Sequential", "Sequential", 10.0, [node("0", "Conv2d", 6.0),
                                                    node("1", "ReLU", 4.0)])  # fmt: skip
    tree = {"kind": "root", "path": "", "total_ms": {"median": 10.0}, "children": [model]}
    titles = [a.title for a in dominant_module({"step_ms": {"median": 10.0}, "tree": tree})]
    assert titles and titles[0].startswith("Sequential.0 (Conv2d) dominates the step"), titles
    # a wrapper's "module" (DataParallel, DDP): which one? its type says
    inner = node("DataParallel.module", "Sequential", 6.0,
                 [node(f"DataParallel.module.{i}", "Linear", 2.0) for i in range(3)])
    wrapper = node("DataParallel", "DataParallel", 10.0, [inner])
    tree = {"kind": "root", "path": "", "total_ms": {"median": 10.0}, "children": [wrapper]}
    titles = [a.title for a in dominant_module({"step_ms": {"median": 10.0}, "tree": tree})]
    assert any("module (Sequential) dominates the step" in t for t in titles), titles


def test_scattered_layers_of_one_type_are_no_stack_and_two_models_are_told_apart():
    """DCGAN: the Discriminator's Sequential holds Conv2d at 0, 2, 5, 8, 11 between its norms and
    activations. They are not "5 identical Conv2d layers" to compile as a stack (use fewer
    layers!), and "main dominates" must say whose main (the Generator has one too)."""
    from torchdoctor.analyze.advice.dominant import dominant_module

    def node(path, type_name, ms, children=()):
        return {"kind": "module", "path": path, "name": path.rsplit(".", 1)[-1],
                "type": type_name, "total_ms": {"median": ms}, "forward_ms": {"median": ms},
                "children": list(children)}  # fmt: skip

    kinds = ["Conv2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU", "Conv2d",
             "BatchNorm2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU", "Conv2d"]  # fmt: skip
    times = [10.0 if k == "Conv2d" else 1.0 for k in kinds]
    layers = [node(f"main.{i}", k, t) for i, (k, t) in enumerate(zip(kinds, times))]
    discriminator = node("Discriminator", "Discriminator", sum(times),
                         [node("main", "Sequential", sum(times), layers)])  # fmt: skip
    generator = node("Generator", "Generator", 12.0,
                     [node("Generator.main", "Sequential", 12.0)])  # fmt: skip
    tree = {"kind": "root", "path": "", "total_ms": {"median": 100.0},
            "children": [discriminator, generator]}  # fmt: skip
    (item,) = dominant_module({"step_ms": {"median": 100.0}, "tree": tree})
    assert item.title.startswith("Discriminator.main dominates the step"), item.title
    assert "identical" not in " ".join(item.evidence) and "fewer layers" not in item.fix
    assert "its convolutions" in item.title  # (its time is in them: compile fuses none)


def test_a_dominant_convolution_is_told_to_make_the_convolution_cheaper_not_to_compile_it():
    """pytorch/examples mnist: conv2 dominates. torch.compile does not speed up the convolution
    itself; channels_last (one advice with the channels_last knob) and bf16 do."""
    from torchdoctor.analyze.advice.dominant import dominant_module

    conv = {"kind": "module", "path": "conv2", "name": "conv2", "type": "Conv2d",
            "total_ms": {"median": 40.0}, "forward_ms": {"median": 20.0}, "children": []}  # fmt: skip
    tree = {"kind": "root", "path": "", "total_ms": {"median": 100.0}, "children": [conv]}
    (item,) = dominant_module({"step_ms": {"median": 100.0}, "tree": tree})
    assert "make the convolution cheaper" in item.title and item.cause == "channels_last"
    assert "channels_last" in item.fix and "torch.compile it" not in item.fix


def test_resnet_stages_are_no_stack_of_identical_layers():
    """torchvision's ResNet: layer1..layer4 are numbered Sequentials, but only layer2..4
    downsample; "4 identical Sequential layers: use fewer layers" was wrong advice."""
    from torchdoctor.analyze.advice.dominant import dominant_module

    def node(path, type_name, ms, children=()):
        return {"kind": "module", "path": path, "name": path.rsplit(".", 1)[-1],
                "type": type_name, "total_ms": {"median": ms}, "forward_ms": {"median": ms},
                "children": list(children)}  # fmt: skip

    def stage(i, downsample):
        first = [node(f"layer{i}.0.conv1", "Conv2d", 5.0)]
        if downsample:
            first.append(node(f"layer{i}.0.downsample", "Sequential", 1.0))
        return node(f"layer{i}", "Sequential", 12.0,
                    [node(f"layer{i}.0", "BasicBlock", 6.0, first),
                     node(f"layer{i}.1", "BasicBlock", 6.0,
                          [node(f"layer{i}.1.conv1", "Conv2d", 5.0)])])  # fmt: skip

    stages = [stage(i, downsample=i > 1) for i in range(1, 5)]
    tree = {"kind": "root", "path": "", "total_ms": {"median": 100.0},
            "children": [node("conv1", "Conv2d", 2.0), *stages]}  # fmt: skip
    titles = [a.title for a in dominant_module({"step_ms": {"median": 100.0}, "tree": tree})]
    assert not any("layer stack" in t or "identical" in t for t in titles), titles


def test_an_rnn_cell_called_per_time_step_is_told_to_run_the_sequence_with_nn_lstm():
    """time_sequence_prediction: LSTMCell called 22k times per step from a Python loop."""
    from torchdoctor.analyze.advice.base import SPEEDUPS
    from torchdoctor.analyze.advice.dominant import dominant_module

    cell = {"kind": "module", "path": "lstm2", "name": "lstm2", "type": "LSTMCell",
            "calls_per_step": 22000.0, "total_ms": {"median": 40.0},
            "forward_ms": {"median": 20.0}, "children": []}  # fmt: skip
    tree = {"kind": "root", "path": "", "total_ms": {"median": 100.0}, "children": [cell]}
    (item,) = dominant_module({"step_ms": {"median": 100.0}, "tree": tree})
    assert "run the sequence with nn.LSTM" in item.title
    low = SPEEDUPS["rnn_sequence"].low
    assert abs(item.estimated_saving_ms - 40.0 * (1 - 1 / low)) < 1e-6


def _tuned(accepted: bool, median: float) -> dict:
    return {"rows": [{"knob": "dataloader_workers", "title": "DataLoader workers",
                      "status": "measured", "accepted": accepted, "drift": 0.0,
                      "speedup": {"median": median, "low": median - 0.1, "high": median + 0.05,
                                  "pairs": 3}}]}  # fmt: skip


def test_a_tune_that_measured_workers_replaces_the_stated_data_loading_saving():
    # pytorch/examples' vae on 2 cores: tune measured num_workers=2 at 0.944x, while the
    # advice still promised 2.83 ms from workers
    session = slow_session()
    (stated,) = data_loading(session)
    assert stated.estimated_saving_ms and "workers" in stated.fix.lower()
    session["tune"] = _tuned(False, 0.944)
    (item,) = data_loading(session)
    assert "workers measured no faster here" in item.title
    assert item.estimated_saving_ms is None and item.code is None
    assert any("0.944x" in e and "not accepted" in e for e in item.evidence)
    assert "make the loading itself cheaper" in item.fix
    session["tune"] = _tuned(True, 1.3)  # accepted: the tuned-knob advice says how much
    assert data_loading(session) == []
    from torchdoctor.analyze.advice import advise

    assert any(a.rule == "tuned-knob" and "DataLoader workers" in a.title for a in advise(session))


def test_workers_on_a_cpu_whose_cores_all_compute_get_no_stated_saving():
    # the same vae before any tune: torch computes on both cores, so workers have none idle
    session = slow_session()
    session["environment"].update(device="cpu", threads=2, cpus=2)
    session["environment"]["data_loaders"] = [{"num_workers": 0}]
    (item,) = data_loading(session)
    assert item.estimated_saving_ms is None and item.confidence == "low"
    assert any("2 intra-op threads on 2 cores" in e and "tune --knobs dataloader_workers" in e
               for e in item.evidence)  # fmt: skip
    # (the fix: load less per sample; "move augmentation to the GPU" fits no CPU run)
    assert "turned into tensors once" in item.fix and "to the GPU" not in item.fix
    assert "num_workers" not in item.code and "Normalize" in item.fix  # (the text's own cure,
    assert "- m) / s" in item.code  # the model's inputs unchanged: mnist_rnn normalizes)
    session["environment"].update(threads=1, cpus=8)  # idle cores: the stated range stands
    (spare,) = data_loading(session)
    assert spare.estimated_saving_ms


def test_the_ranks_on_one_host_share_its_cores():
    """pytorch/examples' ddp-tutorial-series on CPU: two gloo ranks of one thread on 2 cores.
    Told "set num_workers (2-8)", the run went from 8.2 s to 10.5 s: the ranks' threads take
    every core, so workers get no stated saving and the linter's TD401 is set aside."""
    from torchdoctor.analyze.advice.lint_loaders import contradicted

    session = slow_session()
    session["environment"].update(device="cpu", threads=1, cpus=2, world_size=2)
    session["environment"]["data_loaders"] = [{"num_workers": 0}]
    (item,) = data_loading(session)
    assert item.estimated_saving_ms is None
    assert any("2 intra-op threads on 2 cores (2 ranks of 1 each)" in e for e in item.evidence)
    assert contradicted({"code": "TD401"}, session)
    session["environment"]["world_size"] = 1  # (one process of one thread: a core is idle)
    assert not contradicted({"code": "TD401"}, session)
    # ... one core for the workers: no stated saving, only a bound (a Hugging Face image
    # classifier on 2 cores, one thread: 4.1 s -> 4.7 s with 2 workers)
    (one_core,) = data_loading(session)
    assert one_core.estimated_saving_ms is None and one_core.saving_range_ms[1] > 0
    assert any("measure it" in e for e in one_core.evidence)
    session["environment"]["cpus"] = 8  # (7 idle cores: the workers' stated saving)
    assert data_loading(session)[0].estimated_saving_ms


def test_workers_that_do_not_keep_up_on_a_cpu_are_told_to_try_none():
    """karpathy/makemore: 4 workers on 2 cores, 3.6 ms a step; with none, 2.3 ms."""
    session = slow_session()
    session["environment"].update(device="cpu", threads=2, cpus=2)
    session["environment"]["data_loaders"] = [{"num_workers": 4, "persistent_workers": True}]
    (item,) = data_loading(session)
    assert "num_workers=0" in item.fix and item.estimated_saving_ms is None


@pytest.mark.parametrize("loaders", [
    [], [{"num_workers": 0, "iterators": 1}],
    [{"num_workers": 2, "persistent_workers": True, "iterators": 1}],
    [{"num_workers": 0, "iterators": 1, "driver": "transformers"}],  # (TrainingArguments)
])  # fmt: skip
def test_a_cpu_runs_loader_fix_says_nothing_of_a_gpu(loaders):
    """lightning-hydra-template on a CPU was told 'pin_memory=True with non_blocking=True copies
    to a GPU; move augmentation to the GPU': there is no copy to overlap and no GPU."""
    fixes = {}
    for device in ("cpu", "cuda:0"):
        session = slow_session()
        session["environment"] = {"data_loaders": loaders, "cpus": 8, "device": device}
        (item,) = data_loading(session)
        fixes[device] = f"{item.fix}\n{item.code}"
    assert "GPU" not in fixes["cpu"] and "pin_memory" not in fixes["cpu"]
    assert "GPU" in fixes["cuda:0"]

"""Trials in their own process: a never-ending script is stopped after its steps, values and
times come back, and (slow) a compile trial reports its graph break."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from torchdoctor.collect.script import StopScript, load_script, run_script
from torchdoctor.tuning.trial import run_trial

FOREVER_TRAIN = """
import torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.randn(32, 8), torch.randn(32, 1)
while True:  # never ends by itself
    try:
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    except Exception:  # a script that swallows errors must still be stoppable
        pass
"""

FOREVER_INFERENCE = """
import torch
net = torch.nn.Linear(8, 8).eval()
x = torch.randn(4, 8)
with torch.no_grad():
    while True:
        x = torch.tanh(net(x))
"""


def _script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_never_ending_training_script_is_stopped_after_warmup_plus_n_steps(tmp_path):
    script = _script(tmp_path, "forever.py", FOREVER_TRAIN)
    result = run_trial(script, [], [], workdir=tmp_path, warmup=2, steps=4, timeout=120)
    assert result["error"] is None and result["stopped"] is True and result["exit_code"] == 0
    assert result["mode"] == "optimizer"
    assert len(result["step_ms"]) == 6  # 2 warm-up + 4 measured
    assert len(result["values"]) == 6 and all(v > 0 for v in result["values"])  # the losses
    assert result["observed"]["optimizers"][0]["type"] == "SGD"


def test_a_never_ending_inference_loop_is_stopped_and_its_outputs_recorded(tmp_path):
    script = _script(tmp_path, "infer.py", FOREVER_INFERENCE)
    result = run_trial(script, [], ["inference_mode"], workdir=tmp_path, warmup=1, steps=3,
                       timeout=120)  # fmt: skip
    assert result["error"] is None and result["stopped"] is True
    assert result["mode"] == "module" and len(result["step_ms"]) == 4
    assert result["observed"]["backward"] is False and len(result["values"]) == 4


ROLLOUT_THEN_TRAIN = """
import torch
torch.manual_seed(0)
policy = torch.nn.Linear(4, 2)
opt = torch.optim.Adam(policy.parameters())
while True:  # stable-baselines3's PPO: a rollout of one-observation calls, then updates
    with torch.no_grad():
        for _ in range(200):
            policy(torch.randn(1, 4))
    for _ in range(8):
        policy(torch.randn(64, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
"""


def test_a_rollout_before_training_is_waited_past_and_later_trials_start_at_the_optimizer(
    tmp_path,
):
    script = _script(tmp_path, "ppo.py", ROLLOUT_THEN_TRAIN)
    probe = run_trial(script, [], [], workdir=tmp_path, warmup=2, steps=4, timeout=120,
                      grace_s=30.0)  # fmt: skip
    assert probe["error"] is None and probe["mode"] == "optimizer"
    assert probe["observed"]["optimizers"][0]["type"] == "Adam"
    later = run_trial(script, [], [], workdir=tmp_path, warmup=2, steps=4, timeout=120,
                      boundary="optimizer")  # fmt: skip
    assert later["error"] is None and later["mode"] == "optimizer"


def test_a_script_already_under_bf16_autocast_gets_no_precision_trial(tmp_path):
    from torchdoctor.tuning.knobs import KNOB_BY_NAME

    text = FOREVER_TRAIN.replace(
        "        loss = ((net(x) - y) ** 2).mean()",
        "        with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "            loss = ((net(x) - y) ** 2).mean()",
    )
    script = _script(tmp_path, "amp.py", text)
    result = run_trial(script, [], [], workdir=tmp_path, warmup=1, steps=2, timeout=120)
    observed = result["observed"]
    assert observed["autocast"] == "bfloat16"
    reason = KNOB_BY_NAME["bf16_autocast"].applies(observed)
    assert reason == "the script already runs the model under bfloat16 autocast"
    plain = run_trial(_script(tmp_path, "plain.py", FOREVER_TRAIN), [], [], workdir=tmp_path,
                      warmup=1, steps=2, timeout=120)  # fmt: skip
    assert plain["observed"]["autocast"] is None
    assert KNOB_BY_NAME["bf16_autocast"].applies(plain["observed"]) is None


def test_stop_script_ends_run_script_cleanly(tmp_path):
    path = _script(tmp_path, "s.py", "from torchdoctor.collect.script import StopScript\n"
                   "try:\n    raise StopScript()\nexcept Exception:\n    pass\n")  # fmt: skip
    outcome = run_script(load_script(path))
    assert outcome.exit_code == 0 and outcome.stopped and outcome.exception is None
    assert issubclass(StopScript, BaseException) and not issubclass(StopScript, Exception)


#: the training loop of a script's `Net` that never ends by itself (indented as in the tests)
NET_FOREVER = """
        net = Net()
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        while True:
            opt.zero_grad()
            net(torch.ones(2, 4)).pow(2).mean().backward()
            opt.step()
"""


@pytest.mark.slow
def test_compile_trial_reports_the_item_graph_break_with_its_line(tmp_path):
    script = _script(tmp_path, "item.py", """
        import torch
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Linear(4, 4)
            def forward(self, x):
                y = self.a(x)
                if y.sum().item() > 1e9:
                    y = y * 2
                return y
    """ + NET_FOREVER)  # fmt: skip
    result = run_trial(script, [], ["compile"], workdir=tmp_path, warmup=1, steps=2, timeout=600)
    assert result["error"] is None and result["stopped"]
    (found,) = [b for b in result["graph_breaks"] if b["file"] == script]
    assert found["line"] == 9 and "item()" in found["reason"]


class _Saved(torch.nn.Module):
    """A model class the script defines and saves whole (torch.save(model), an EMA copy)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x)


def test_an_adopted_model_saves_loads_and_copies_as_the_script_s_own_class():
    """The trial gives outermost modules a subclass (its __call__ marks steps and applies the
    knobs); word_language_model's torch.save(model) then failed ("Can't pickle <class
    'model.TransformerModel'>: it's not the same object"), failing every knob's trial."""
    import copy
    import io

    from torchdoctor.tuning.harness import Trial

    trial = Trial({"knobs": [], "warmup": 1, "steps": 2})
    trial.install()
    try:
        model = _Saved()
        model(torch.ones(1, 2))
        assert type(model) is not _Saved and model.__class__ is _Saved  # adopted
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        with torch.serialization.safe_globals([_Saved, torch.nn.Linear]):
            loaded = torch.load(buffer)  # weights_only, the class allowed: as the script does
        twin = copy.deepcopy(model)
    finally:
        trial.remove()
    assert type(loaded) is _Saved and type(twin) is _Saved and type(model) is _Saved
    assert torch.equal(loaded.fc.weight, model.fc.weight)


TRANSFORMS_IN_THE_LOADER = """
import torch
from torch.utils.data import DataLoader, Dataset

class Scale(torch.nn.Module):  # a transform that is a module (torchvision's are)
    def forward(self, x):
        return x * 0.5

class Images(Dataset):
    def __init__(self):
        self.scale = Scale()
    def __len__(self):
        return 64
    def __getitem__(self, i):
        return self.scale(torch.full((8,), float(i))), torch.tensor([float(i)])

net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(net.parameters(), lr=1e-4)
loader = DataLoader(Images(), batch_size=8, num_workers=WORKERS)
while True:
    for x, y in loader:
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loaders_module_transforms_are_not_the_step(tmp_path, workers):
    """pytorch-GAN's wgan_gp: torchvision's Resize and Normalize are modules called in the
    loader's fetch, before any backward: the trial took Resize for the model and measured
    0.22 ms "steps"; with workers (forked during warm-up, with the hooks), each worker was
    stopped at its transforms' "steps" and the loader failed."""
    text = TRANSFORMS_IN_THE_LOADER.replace("WORKERS", str(workers))
    script = _script(tmp_path, f"loader{workers}.py", text)
    result = run_trial(script, [], [], workdir=tmp_path, warmup=2, steps=3, timeout=120)
    assert result["error"] is None and result["stopped"] is True
    assert result["mode"] == "optimizer"
    assert [r["type"] for r in result["observed"]["roots"]] == ["Sequential"]


@pytest.mark.slow
def test_a_compile_trial_of_a_script_that_never_imports_torch_itself(tmp_path):
    """lucidrains' diffusion Trainer: the script imports only the library. Dynamo, tracing the
    trial's module hooks (defined in the harness, run as `python -m`: globals named
    `__main__`), looked `torch` up on `__main__`, the script: InternalTorchDynamoError."""
    (tmp_path / "library.py").write_text(textwrap.dedent("""
        import torch
        class Net(torch.nn.Module):  # (its forward reads `torch` too: a duplicate source)
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Linear(4, 1)
            def forward(self, x):
                return torch.relu(self.a(x))
        def train():
    """) + textwrap.indent(textwrap.dedent(NET_FOREVER), "    "))  # fmt: skip
    script = _script(tmp_path, "train.py", "import library\nlibrary.train()\n")
    result = run_trial(script, [], ["compile"], workdir=tmp_path, warmup=1, steps=2, timeout=600)
    assert result["error"] is None and result["stopped"], result["error"]

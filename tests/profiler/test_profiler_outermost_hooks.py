"""Light steps of an inference loop hook its outermost modules alone: each submodule call
takes torch's fast path, and steps are still cut at the same calls."""

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

import torchdoctor
from torchdoctor.analyze.tree import check_invariants


def _hooks_now(module):
    """(global hooks installed, hooks on ``module``) while it runs."""
    return bool(torch_module._global_forward_pre_hooks), bool(module._forward_pre_hooks)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
        self.seen = []

    def forward(self, x):
        self.seen.append(_hooks_now(self))
        return self.layers(x)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8))
        self.seen = []

    def forward(self, x, memory):
        self.seen.append(_hooks_now(self))
        return self.inner(x + memory)


def _decode(decoder, encoder, sequences=6, tokens=30, detail="windows"):
    with (
        torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, detail=detail,
                             window=3, period_steps=60) as prof,
        torch.no_grad(),
    ):  # fmt: skip
        for _ in range(sequences):
            memory = encoder(torch.randn(2, 8))  # (an encoder once per sequence)
            x = torch.zeros(2, 8)
            for _ in range(tokens):
                x = decoder(x, memory)
    return prof.session


def test_light_steps_hook_the_outermost_modules_alone():
    torch.manual_seed(0)
    encoder, decoder = Encoder(), Decoder()
    session = _decode(decoder, encoder)
    assert session["config"]["step_boundary"] == "module"
    assert len(session["steps"]) >= 170  # every decoder call a step (minus the deciding ones)
    hooked_alone = [seen for seen in decoder.seen if seen == (False, True)]
    everywhere = [seen for seen in decoder.seen if seen[0]]
    assert len(hooked_alone) > 120 and everywhere  # light steps, and the windows' detail
    assert session["config"]["profiler_overhead"]["light_cost_us"]
    check_invariants(session["tree"])
    assert (False, True) in encoder.seen  # (an encoder between light steps: hooked too)
    assert not decoder._forward_pre_hooks and not encoder._forward_pre_hooks  # (removed)
    assert not torch_module._global_forward_pre_hooks


def test_detail_always_and_windows_cut_the_same_steps():
    torch.manual_seed(0)
    light = _decode(Decoder(), Encoder())
    always = _decode(Decoder(), Encoder(), detail="always")
    assert len(light["steps"]) == len(always["steps"])


def test_an_outermost_module_that_also_runs_nested_keeps_the_global_hooks():
    # the decoder's inner block is called on its own once: hooked alone, it would look
    # outermost inside the decoder; the light steps hook every module instead
    torch.manual_seed(0)
    encoder, decoder = Encoder(), Decoder()
    with (
        torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3,
                             period_steps=60) as prof,
        torch.no_grad(),
    ):  # fmt: skip
        decoder.inner(torch.zeros(2, 8))
        memory = encoder(torch.randn(2, 8))
        x = torch.zeros(2, 8)
        for _ in range(80):
            x = decoder(x, memory)
    assert all(global_hooks for global_hooks, _ in decoder.seen)
    assert not prof.state.light_hooks_outermost


def test_training_light_steps_count_their_model_calls_with_a_counting_hook_alone():
    """A training loop's light steps record their outermost model calls (`model_calls`, and
    `eval_calls` in eval mode): an evaluation between steps shows as many. Only a counting
    pre-hook is on the model then (no global hooks, no forward hook), and none is left after."""
    torch.manual_seed(0)
    model = Encoder()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3,
                              period_steps=60) as prof:  # fmt: skip
        for i in range(30):
            model(torch.randn(2, 8)).sum().backward()
            opt.step()
            if i == 20:
                model.eval()
                with torch.no_grad():
                    for _ in range(7):
                        model(torch.randn(2, 8))
                model.train()
    steps = prof.session["steps"]
    light = [s for s in steps if not s["detailed"]]
    assert light and all(s["model_calls"] >= 1 for s in steps)
    (evaluating,) = [s for s in steps if s.get("eval_calls")]
    assert not evaluating["detailed"]
    assert (evaluating["model_calls"], evaluating["eval_calls"]) == (8, 7)
    assert sum(s["model_calls"] == 1 for s in steps) == len(steps) - 1
    assert (False, True) in model.seen  # a light step: the counting hook alone
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert not torch_module._global_forward_pre_hooks


def test_a_hugging_face_model_s_attention_dropout_inside_sdpa_is_noted():
    """A model whose ``config`` says attention dropout runs inside SDPA (no Dropout module in
    the tree): the session notes it for the dropout advice; eager attention is left to its
    modules."""
    import types

    def run(implementation):
        model = Encoder()
        model.config = types.SimpleNamespace(attention_probs_dropout_prob=0.1,
                                             _attn_implementation=implementation)  # fmt: skip
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False) as prof:
            for _ in range(6):
                model(torch.randn(2, 8)).sum().backward()
                opt.step()
        return prof.session["environment"].get("attention_dropout")

    noted = run("sdpa")
    assert noted == {"model": "Encoder", "attribute": "attention_probs_dropout_prob", "p": 0.1,
                     "attn_implementation": "sdpa"}  # fmt: skip
    assert run("eager") is None


def test_multihead_attention_s_own_dropout_is_noted():
    """nn.Transformer's layers drop their attention weights inside nn.MultiheadAttention
    (dropout=0.1 by default): no Dropout module shows it (a Fabric language model: 38 ms of a
    178 ms step); a layer built with dropout=0.0 is nothing to note."""
    def run(p):
        torch.manual_seed(0)
        model = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(
            16, 2, 32, dropout=p, batch_first=True), 2, enable_nested_tensor=False)  # fmt: skip
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False) as prof:
            for _ in range(4):
                model(torch.randn(2, 5, 16)).sum().backward()
                opt.step()
        return prof.session["environment"].get("attention_dropout")

    noted = run(0.1)
    assert noted == {"model": "TransformerEncoder", "attribute": "dropout", "p": 0.1,
                     "attn_implementation": "nn.MultiheadAttention", "layers": 2}  # fmt: skip
    assert run(0.0) is None


def test_an_evaluation_through_a_loss_module_wrapping_the_model_counts_in_eval_mode():
    """sentence-transformers' losses hold the model; Trainer.evaluate calls model.eval() on the
    model, not on the loss module, which stays in training mode: its calls are still an
    evaluation's (every dropout is off)."""

    class PairLoss(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.mse = model, torch.nn.MSELoss()

        def forward(self, a, b):
            return self.mse(self.model(a), self.model(b))

    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.1))
    loss_fn = PairLoss(inner)
    opt = torch.optim.SGD(inner.parameters(), lr=0.1)
    with torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3,
                              period_steps=60) as prof:  # fmt: skip
        for i in range(30):
            loss_fn(torch.randn(2, 8), torch.randn(2, 8)).backward()
            opt.step()
            if i == 20:
                inner.eval()
                with torch.no_grad():
                    for _ in range(7):
                        loss_fn(torch.randn(2, 8), torch.randn(2, 8))
                inner.train()
    (evaluating,) = [s for s in prof.session["steps"] if s.get("eval_calls")]
    assert (evaluating["model_calls"], evaluating["eval_calls"]) == (8, 7)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_a_torchscript_model_keeps_the_global_hooks_in_light_steps():
    """torch refuses hooks on one ScriptModule (`register_forward_pre_hook is not supported on
    ScriptModules`): a scripted model's training loop and inference loop run to their end with
    every step recorded, the light steps under the global hooks."""
    torch.manual_seed(0)
    model = torch.jit.script(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3,
                              period_steps=60) as prof:  # fmt: skip
        for _ in range(30):
            model(torch.randn(2, 8)).sum().backward()
            opt.step()
    steps = prof.session["steps"]
    assert len(steps) >= 25 and any(not s["detailed"] for s in steps)
    check_invariants(prof.session["tree"])
    with (
        torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3,
                             period_steps=60) as prof,
        torch.no_grad(),
    ):  # fmt: skip
        for _ in range(40):
            model(torch.randn(2, 8))
    assert prof.session["config"]["step_boundary"] == "module"
    assert len(prof.session["steps"]) >= 35
    assert not torch_module._global_forward_pre_hooks


class Building(nn.Module):
    """A model whose forward builds a module (a child registered inside an open call)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        self.made = nn.Sequential(nn.Identity())
        return self.lin(x)


def _two_loops(first, build_second, calls=40):
    """``first`` called 60 times, then a second model built by ``build_second()`` and called
    ``calls`` times (a sentiment pipeline, then a NER one)."""
    with (
        torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3,
                             period_steps=50) as prof,
        torch.no_grad(),
    ):  # fmt: skip
        for _ in range(60):
            first(torch.randn(2, 8))
        second = build_second()
        for _ in range(calls):
            second(torch.randn(2, 8))
    return prof, second


def test_a_model_built_after_the_loop_began_is_hooked_and_starts_steps():
    # light steps hooked the first model alone: the second one's calls were seen by no hook,
    # no step began, and its 40 calls were the last step's "work after the loop"
    torch.manual_seed(0)
    prof, second = _two_loops(Encoder(), Encoder)
    session = prof.session
    assert len(session["steps"]) >= 95  # (60 + 40 calls, less the deciding ones)
    assert all(step["model_calls"] == 1 for step in session["steps"][:-1])
    assert (False, True) in second.seen  # (its light steps: hooked alone, with the first)
    check_invariants(session["tree"])
    assert not second._forward_pre_hooks and not torch_module._global_forward_pre_hooks
    assert not torch_module._global_module_registration_hooks  # (the watch removed)


def test_a_module_built_inside_a_forward_leaves_the_light_steps_narrowed():
    # near miss: a child registered inside an open call changes nothing (the global hooks
    # switched on there would end a call they never began); the loop keeps its steps
    torch.manual_seed(0)
    model = Building()
    prof, _ = _two_loops(model, lambda: model, calls=0)
    assert len(prof.session["steps"]) >= 55
    assert prof.state.light_hooks_outermost


def test_a_parametrized_weight_read_outside_a_forward_starts_no_step():
    # Wav2Vec2's weight-normed positional conv: from_pretrained reads conv.weight three times
    # (its ParametrizationList called outermost): the step boundary was decided on those
    # calls, and two "steps" before the loop held the loading of its data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    nn.utils.parametrizations.weight_norm(model[0])
    with (
        torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False, window=3) as prof,
        torch.no_grad(),
    ):  # fmt: skip
        for _ in range(4):
            _ = model[0].weight  # (at load, outside any forward)
        for _ in range(20):
            model(torch.randn(2, 8))  # (inside it: nested, hooked as before)
    steps = prof.session["steps"]
    assert 18 <= len(steps) <= 19 and all(step["input_shape"] == [2, 8] for step in steps)
    assert "0.parametrizations.weight" in str(prof.session["tree"])  # (near miss: nested)


def test_a_model_torchdoctor_builds_during_a_light_step_stays_unseen():
    # near miss: the host-speed calibration builds its Sequential inside a step; widened for
    # it, the global hooks took its forward/backward calls for the script's (98 more steps)
    from torchdoctor.collect import calibration_cache

    def build_and_time():
        calibration_cache._speed_us = None
        calibration_cache.host_speed_us()
        return Encoder()

    torch.manual_seed(0)
    prof, _ = _two_loops(Encoder(), build_and_time, calls=0)
    assert len(prof.session["steps"]) <= 60  # (the calibration's calls cut no step)
    assert prof.state.light_hooks_outermost


def test_the_host_speed_is_measured_before_the_hooks_go_in(monkeypatch, tmp_path):
    # with the calibration cache on, a calibration recalled inside a step measured the host's
    # speed there: its tiny model's forward and backward were module calls of the script (a
    # Wav2Vec2 loop's steps cut at its Sequential, then revised into one partial step)
    from torchdoctor.collect import calibration_cache

    monkeypatch.setenv(calibration_cache.CACHE_ENV, str(tmp_path / "calibration.json"))
    monkeypatch.setattr(calibration_cache, "_speed_us", None)
    torch.manual_seed(0)
    model = Encoder()
    with torchdoctor.Profiler(step_boundary="auto", syncs=False, hot_lines=False) as prof:
        with torch.no_grad():
            for i in range(30):
                model(torch.randn(2, 8))
                if i == 1:  # (in the first detailed window)
                    calibration_cache.host_speed_us()
    steps = prof.session["steps"]
    assert len(steps) >= 27 and all(step["input_shape"] == [2, 8] for step in steps)
    assert all(step["phases"]["backward"] == 0 for step in steps)


def test_no_host_speed_is_measured_with_the_cache_off(monkeypatch):
    from torchdoctor.collect import calibration_cache

    monkeypatch.setenv(calibration_cache.CACHE_ENV, "off")  # near miss: nothing read or kept
    monkeypatch.setattr(calibration_cache, "_speed_us", None)
    calibration_cache.speed_before_profiling()
    assert calibration_cache._speed_us is None

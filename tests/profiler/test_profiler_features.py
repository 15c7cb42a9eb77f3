"""Regions nested with modules, recomputation, activation bytes, timeline, inference ratio,
sync-audit integration, and a save/load round trip of a real session."""

import inspect
import json

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.tree import check_invariants
from torchdoctor.collect.state import STATE
from torchdoctor.session import Session
from torchdoctor.session_read import walk


class WithRegions(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.seen = []

    def forward(self, x):
        with torchdoctor.region("inner"):
            self.seen.append((STATE.phase, list(STATE.module_stack)))
            h = self.a(x)
        return self.b(h)


def _by_path(session):
    return {n["path"]: n for n, _ in walk(session["tree"])}


def test_regions_nest_with_modules():
    torch.manual_seed(0)
    model = WithRegions()
    x = torch.randn(2, 4)

    @torchdoctor.region("post")
    def post(y):
        return y.sum()

    def step():
        with torchdoctor.region("outer"):
            out = model(x)
        post(out).backward()

    s = torchdoctor.profile(step, model=model, steps=2, warmup=1, syncs=False)
    assert check_invariants(s["tree"], step_ms=s["step_ms"]["mean"]) == []
    nodes = _by_path(s)
    outer = nodes["outer"]
    assert outer["kind"] == "region" and outer["source"]["function"] == "step"
    root_module = outer["children"][0]
    assert root_module["path"] == "WithRegions"
    inner = next(c for c in root_module["children"] if c["kind"] == "region")
    assert inner["path"] == "WithRegions.inner"
    assert [c["path"] for c in inner["children"] if c["kind"] == "module"] == ["a"]
    assert "post" in nodes and nodes["post"]["calls_per_step"] == 1.0
    assert nodes["a"]["backward_ms"]["mean"] > 0
    assert model.seen[-1] == ("forward", ["outer", "WithRegions", "WithRegions.inner"])


class Sampler(nn.Module):
    """Re-runs its encoder on unchanged inputs at every denoising step (seed 001)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.decoder = nn.Linear(8, 8)

    def forward(self, obs, steps=4, x=None):
        x = torch.zeros_like(obs) if x is None else x
        for _ in range(steps):
            memory = self.encoder(obs)
            x = self.decoder(x + memory)
        return x


def test_identical_input_recomputation_is_reported():
    torch.manual_seed(0)
    model = Sampler()
    obs = torch.randn(2, 8)
    with torch.no_grad():
        s = torchdoctor.profile(lambda: model(obs), model=model, steps=2, warmup=1, syncs=False)
    records = {r["path"]: r for r in s["recomputation"]}
    assert set(records) == {"encoder"}
    assert records["encoder"]["calls_per_step"] == 4.0
    assert records["encoder"]["identical_input_calls"] == 3.0
    assert records["encoder"]["source"]["function"] == "forward"


def test_activation_bytes_count_saved_tensors_once():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    x = torch.randn(4, 8)
    s = torchdoctor.profile(
        lambda: model(x).sum().backward(), model=model, steps=1, warmup=0, syncs=False
    )
    nodes = _by_path(s)
    assert nodes["0"]["activation_bytes"] == 4 * 8 * 4  # the input x; the weight is not counted
    assert nodes["1"]["activation_bytes"] == 4 * 16 * 4  # relu saves its output
    assert nodes["Sequential"]["activation_bytes"] == 4 * 8 * 4 + 4 * 16 * 4


def test_activation_bytes_under_gradient_accumulation_are_one_micro_batchs():
    """The second micro-batch's saved tensors reuse the memory the first one's backward freed:
    counted by storage, they were half missed, and identical layers differed (a Hugging Face
    Trainer run's GPT-2 blocks: 14.4 to 18.4 MB, no longer a stack of identical layers)."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Sequential(nn.Linear(32, 32), nn.GELU()) for _ in range(4)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        for _ in range(4):
            model(torch.randn(16, 32)).square().mean().backward()
        opt.step()

    s = torchdoctor.profile(step, model=model, steps=1, warmup=1, syncs=False)
    sizes = {_by_path(s)[f"{i}"]["activation_bytes"] for i in range(4)}
    assert sizes == {2 * 16 * 32 * 4}  # each block's input and GELU input, one micro-batch


def test_timeline_of_a_representative_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    x = torch.randn(2, 4)
    s = torchdoctor.profile(
        lambda: model(x).sum().backward(), model=model, steps=3, warmup=0, syncs=False
    )
    events = s["timeline"]
    cats = {e["cat"] for e in events}
    assert {"phase", "forward", "backward"} <= cats
    longest = max(step["wall_ms"] for step in s["steps"]) * 1e3
    for e in events:
        assert e["ts_us"] >= 0 and e["dur_us"] >= 0 and e["ts_us"] + e["dur_us"] <= longest + 1e-3
    assert {e["name"] for e in events if e["cat"] == "forward"} == {"Sequential", "0", "1"}


def test_inference_comparison():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(4, 8)

    def step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()

    s = torchdoctor.profile(
        step, model=model, steps=2, warmup=1, syncs=False, compare_inference=True, batch=x
    )
    info = s["inference"]
    assert info["train_step_ms"] > 0 and info["inference_ms"] > 0
    assert info["train_inference_ratio"] == pytest.approx(
        info["train_step_ms"] / info["inference_ms"]
    )
    assert info["backward_forward_ratio"] > 0
    assert model.training  # restored after the eval-mode inference run
    assert "training step" in s.tree() and "backward/forward" in s.tree()
    for record in s["steps"]:  # CPU: growth of the peak RSS during the step
        assert isinstance(record["peak_memory_bytes"], int) and record["peak_memory_bytes"] >= 0


def test_sync_audit_records_land_in_the_session():
    model = nn.Linear(4, 1)
    x = torch.randn(3, 4)
    losses = []

    def step():
        loss = model(x).sum()
        loss.backward()
        losses.append(loss.item())  # a host sync per step

    s = torchdoctor.profile(step, model=model, steps=2, warmup=1)
    items = [r for r in s["syncs"] if r["kind"] == "item"]
    assert items and items[0]["per_step"] == pytest.approx(1.0)
    assert s["sync_audit"] is not None


def test_save_load_round_trip_of_a_profiled_session(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    x = torch.randn(2, 4)
    s = torchdoctor.profile(
        lambda: model(x).sum().backward(), model=model, steps=2, warmup=0, syncs=False
    )
    path = s.save(tmp_path / "session.json")
    loaded = Session.load(path)
    assert loaded == s
    assert loaded.tree() == s.tree()
    json.loads(path.read_text())  # plain JSON


def test_user_markers_inside_profile_are_ignored_and_memory_hooks_last_one_step():
    model = nn.Linear(4, 1)
    x = torch.randn(3, 4)
    hooks_seen = []

    def step():
        out = model(x).sum()
        hooks_seen.append(torch._C._autograd._top_saved_tensors_default_hooks(False) is not None)
        out.backward()  # (off from here: one pass is counted)
        torchdoctor.step()  # profile() marks steps itself

    s = torchdoctor.profile(step, model=model, steps=3, warmup=1, syncs=False)
    assert len(s["steps"]) == 3
    assert hooks_seen == [False, True, False, False]  # counted on the first profiled step only
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None


def test_checkpointed_module_is_profiled():
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    head = nn.Linear(6, 1)
    x = torch.randn(2, 6, requires_grad=True)

    def step():
        h = checkpoint(inner, x, use_reentrant=False)
        head(h).sum().backward()

    s = torchdoctor.profile(step, steps=2, warmup=1, syncs=False)
    assert check_invariants(s["tree"], step_ms=s["step_ms"]["mean"]) == []
    nodes = _by_path(s)
    assert nodes["Sequential"]["backward_ms"]["mean"] > 0
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None


class _ScaleWithRegionInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        with torchdoctor.region("custom-backward"):
            return grad * 2


def test_region_inside_backward_counts_as_backward_time():
    model = nn.Linear(4, 4)
    x = torch.randn(2, 4)

    def step():
        _ScaleWithRegionInBackward.apply(model(x)).sum().backward()

    s = torchdoctor.profile(step, model=model, steps=2, warmup=1, syncs=False)
    assert check_invariants(s["tree"], step_ms=s["step_ms"]["mean"]) == []
    node = _by_path(s)["custom-backward"]
    assert node["kind"] == "region"
    assert node["forward_ms"]["max"] == 0.0 and node["backward_ms"]["mean"] > 0


def test_max_steps_stops_collecting():
    model = nn.Linear(4, 1)
    with torchdoctor.Profiler(model, syncs=False, max_steps=2) as prof:
        for _ in range(5):
            model(torch.randn(2, 4)).sum().backward()
            prof.step()
    s = prof.session
    assert len(s["steps"]) == 2
    assert any("max_steps=2" in note for note in s["config"]["notes"])


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_exotic_inputs_do_not_break_the_users_forward():
    class Summer(nn.Module):
        def forward(self, x):
            return torch.stack([t.sum() for t in x.unbind()])

    nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])  # stride() raises
    module = Summer()
    s = torchdoctor.profile(lambda: module(nested), model=module, steps=1, warmup=0, syncs=False)
    assert s["tree"]["children"][0]["calls_per_step"] == 1.0


def test_same_inputs_with_updated_weights_are_not_recomputation():
    """LBFGS re-evaluates its closure on the same batch with new weights: new work each time."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=4)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    s = torchdoctor.profile(lambda: optimizer.step(closure), steps=2, warmup=1, syncs=False)
    calls = {n["path"]: n["calls_per_step"] for n, _ in walk(s["tree"])}
    assert max(calls.values()) > 1  # the closure ran the model several times per step
    assert s["recomputation"] == []


def test_repeated_profiled_calls_are_not_recomputation_but_a_sampler_loop_is(tmp_path):
    """profile() repeats one step on purpose; `run` on an inference loop cuts a step per
    outermost call, and there the encoder fed the same conditions every call is recomputed."""
    model = Sampler()
    obs = torch.randn(2, 8)
    with torch.no_grad():
        s = torchdoctor.profile(lambda: model.decoder(obs), steps=3, warmup=1, syncs=False)
    assert s["recomputation"] == []

    x = torch.zeros(2, 8)
    with torch.no_grad(), torchdoctor.Profiler(step_boundary="auto", syncs=False) as prof:
        for _ in range(8):
            x = model(obs, 1, x)  # one denoising call per iteration: x changes
    assert prof.session["config"]["step_boundary"] == "module"
    paths = [r["path"] for r in prof.session["recomputation"]]
    assert any(p.endswith("encoder") for p in paths), paths
    assert not any(p.endswith("decoder") for p in paths), paths


def test_sampler_with_two_top_level_modules_steps_per_iteration_and_names_the_call_site():
    """A condition encoder and a denoiser called as separate top-level modules: one step is one
    loop iteration (cut at the module that repeats first), and the encoder fed the same
    condition every iteration is reported with the line that calls it."""
    torch.manual_seed(0)
    encoder, denoiser = nn.Linear(6, 8), nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    condition, x = torch.randn(3, 6), torch.zeros(3, 8)
    with torch.no_grad(), torchdoctor.Profiler(step_boundary="auto", syncs=False) as prof:
        for _ in range(10):
            h = encoder(condition)  # the same condition every iteration
            x = x - 0.1 * denoiser(x + h)
    call_line = inspect.currentframe().f_lineno - 2
    s = prof.session
    assert s["config"]["step_boundary"] == "module"
    assert any("a step starts at each call of Linear" in n for n in s["config"]["notes"])
    calls = {n["path"]: n["calls_per_step"] for n, _ in walk(s["tree"]) if n["path"]}
    assert calls["Linear"] == 1 and calls["Sequential"] == 1, calls
    (record,) = [r for r in s["recomputation"] if r["path"] == "Linear"]
    assert record["identical_input_calls"] == 1
    assert record["call_site"]["line"] == call_line and record["call_site"]["file"] == __file__
    assert record["call_site"]["code"].startswith("h = encoder(condition)")
    assert not any(r["path"].startswith("Sequential") for r in s["recomputation"])


def test_engine_knobs_in_use_are_recorded_and_silence_their_advice():
    from torchdoctor.analyze.advice.knobs import engine_knobs

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 4))
    x = torch.randn(2, 3, 16, 16)
    plain = torchdoctor.profile(lambda: net(x).sum().backward(), steps=2, warmup=1, syncs=False)
    assert plain["environment"]["knobs"]["autocast"] is False
    assert plain["environment"]["knobs"]["channels_last"] is False

    net = net.to(memory_format=torch.channels_last)
    xc = x.to(memory_format=torch.channels_last)

    def tuned():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(xc).float().sum().backward()

    s = torchdoctor.profile(tuned, steps=2, warmup=1, syncs=False)
    assert s["environment"]["knobs"]["autocast"] is True
    assert s["environment"]["knobs"]["channels_last"] is True
    titles = [a.title for a in engine_knobs(s)]
    assert not any("channels_last" in t for t in titles)
    assert any("channels_last" in a.title for a in engine_knobs(plain))


def test_guided_sampler_encoding_twice_steps_at_the_first_encoder_call():
    """Classifier-free guidance encoding the prompt and the empty prompt: the loop opens with
    two encoder calls, then two denoiser calls. A step starts at the first encoder call of
    each iteration (not at every module call), and the re-encoded prompt is recomputation."""
    torch.manual_seed(0)
    encoder, denoiser = nn.Linear(6, 8), nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    prompt, empty, x = torch.randn(3, 6), torch.zeros(3, 6), torch.zeros(3, 8)
    with torch.no_grad(), torchdoctor.Profiler(step_boundary="auto", syncs=False) as prof:
        for _ in range(12):
            c, u = encoder(prompt), encoder(empty)
            guided, plain = denoiser(x + c), denoiser(x + u)
            x = x - 0.1 * (plain + 2.0 * (guided - plain))
    s = prof.session
    assert any("the first of its 2 calls in a row" in n for n in s["config"]["notes"])
    calls = {n["path"]: n["calls_per_step"] for n, _ in walk(s["tree"]) if n["path"]}
    assert calls["Linear"] == 2 and calls["Sequential"] == 2, calls
    assert len(s["steps"]) >= 9
    assert "Linear" in [r["path"] for r in s["recomputation"]]


def test_guided_sampler_calling_the_denoiser_twice_steps_at_the_loop_opener():
    """Classifier-free guidance: encoder once, denoiser twice per iteration. Steps start at the
    module the loop opens with (the encoder), not at the denoiser's second call."""
    torch.manual_seed(0)
    encoder, denoiser = nn.Linear(6, 8), nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    condition, x = torch.randn(3, 6), torch.zeros(3, 8)
    with torch.no_grad(), torchdoctor.Profiler(step_boundary="auto", syncs=False) as prof:
        for _ in range(12):
            h = encoder(condition)
            guided, plain = denoiser(x + h), denoiser(x)
            x = x - 0.1 * (plain + 2.0 * (guided - plain))
    s = prof.session
    assert any("the first one the loop calls" in n for n in s["config"]["notes"])
    calls = {n["path"]: n["calls_per_step"] for n, _ in walk(s["tree"]) if n["path"]}
    assert calls["Linear"] == 1 and calls["Sequential"] == 2, calls
    assert [r["path"] for r in s["recomputation"]] == ["Linear"]


def test_a_decoding_loop_calling_its_embedding_twice_steps_once_per_token():
    """A greedy seq2seq decoder embeds its source (for the encoder) and its tokens (for the
    decoder) at every iteration: the loop opens with the embedding, called twice per iteration
    with other modules between. A step is one iteration (every 2nd call of it): one encoder and
    one decoder call per step, and the source's embedding is recomputation."""
    torch.manual_seed(0)
    embed, encoder = nn.Embedding(16, 8), nn.Linear(8, 8)
    decoder = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    src, ys = torch.randint(0, 16, (3, 5)), torch.zeros(3, 1, dtype=torch.long)
    with torch.no_grad(), torchdoctor.Profiler(step_boundary="auto", syncs=False) as prof:
        for _ in range(16):
            memory = encoder(embed(src)).mean(1, keepdim=True)
            out = decoder(embed(ys)[:, -1:] + memory)
            ys = torch.cat([ys, out.argmax(-1)], dim=1)
    s = prof.session
    assert any("Embedding is called 2 times per iteration" in n for n in s["config"]["notes"])
    calls = {n["path"]: n["calls_per_step"] for n, _ in walk(s["tree"]) if n["path"]}
    assert calls["Embedding"] == 2 and calls["Linear"] == 1 and calls["Sequential"] == 1, calls
    assert len(s["steps"]) >= 10
    assert "Embedding" in [r["path"] for r in s["recomputation"]]


def test_profiler_overhead_is_estimated_and_noted_when_sizable():
    """Hundreds of tiny modules: the hooks are a large share of the step, and the report says
    so; one large matmul: negligible, no note."""
    torch.manual_seed(0)
    tiny = nn.Sequential(*[nn.Linear(8, 8) for _ in range(100)])
    x = torch.randn(4, 8)
    with torch.no_grad():
        s = torchdoctor.profile(lambda: tiny(x), model=tiny, steps=5, warmup=1, syncs=False)
    estimate = s["config"]["profiler_overhead"]
    assert estimate["calls_per_step"] >= 100 and estimate["cost_us"] > 0
    assert any("profiler overhead ~" in note for note in s["config"]["notes"])
    big, y = nn.Linear(1024, 1024), torch.randn(512, 1024)
    with torch.no_grad():
        s = torchdoctor.profile(lambda: big(y), model=big, steps=5, warmup=1, syncs=False)
    assert s["config"]["profiler_overhead"]["overhead_pct"] < 5
    assert not any("profiler overhead" in note for note in s["config"]["notes"])

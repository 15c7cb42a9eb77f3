"""Recomputation under training: weight parametrizations, gradient accumulation's
micro-steps, and modules that write their own buffers."""

import torch
from torch import nn

import torchdoctor
from torchdoctor.session_read import walk


class Parametrized(nn.Module):
    """A weight-normed layer and a spectral-normed one (it writes its own buffers at each
    training-mode call), plus a module run on learned queries (a parameter: the same input
    at every call)."""

    def __init__(self, repeats=1):
        super().__init__()
        self.a = nn.utils.parametrizations.weight_norm(nn.Linear(6, 6))
        self.b = nn.utils.parametrizations.spectral_norm(nn.Linear(6, 6))
        self.queries = nn.Parameter(torch.randn(3, 6))
        self.norm = nn.LayerNorm(6)
        self.repeats = repeats

    def forward(self, x):
        for _ in range(self.repeats):  # an RNN-like reuse of one layer
            x = torch.tanh(self.a(x))
        return self.b(x) @ self.norm(self.queries).T


def test_gradient_accumulation_micro_steps_are_not_recomputation():
    """Each micro-step re-runs the weight parametrizations and the module on the learned
    queries with the same inputs, and must: the previous backward consumed their graph."""
    torch.manual_seed(0)
    model = Parametrized()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        for _ in range(4):
            model(torch.randn(5, 6)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()

    s = torchdoctor.profile(step, model=model, steps=2, warmup=1, syncs=False)
    calls = {n["path"]: n["calls_per_step"] for n, _ in walk(s["tree"])}
    assert calls["norm"] == 4.0 and calls["a.parametrizations.weight.0"] == 4.0
    assert s["recomputation"] == []


def test_a_parametrization_reused_within_one_forward_is_recomputation_with_its_remedy():
    torch.manual_seed(0)
    model = Parametrized(repeats=3)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        model(torch.randn(5, 6)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()

    s = torchdoctor.profile(step, model=model, steps=2, warmup=1, syncs=False)
    records = {r["path"]: r for r in s["recomputation"]}
    # weight norm: 3 uses of one weight, 2 of them repeats; spectral norm (one use) and the
    # whole `b` writing its power-iteration buffers are never taken for repeats
    assert records["a.parametrizations.weight.0"]["identical_input_calls"] == 2.0
    assert not any(path.startswith("b") for path in records)
    from torchdoctor.analyze.advice.recompute import loop_invariant

    session = s.to_dict()
    session["step_ms"] = {"median": 0.01}  # (its saving is then sizable whatever the timings)
    advice = [a for a in loop_invariant(session) if "parametrizations" in a.title]
    assert advice and "parametrize.cached()" in advice[0].fix


def test_a_module_that_writes_its_buffers_is_no_recomputation():
    """Spectral norm's power iteration updates its u/v buffers in place at each training
    call: the same weight gives a different result the next time."""
    torch.manual_seed(0)
    layer = nn.utils.parametrizations.spectral_norm(nn.Linear(6, 6))
    x = torch.randn(4, 6)

    def step():
        for _ in range(3):
            layer(x)

    with torch.no_grad():
        s = torchdoctor.profile(step, model=layer, steps=2, warmup=1, syncs=False)
    assert s["recomputation"] == []
    layer.eval()  # evaluation: no power iteration, the same weight each call
    with torch.no_grad():
        s = torchdoctor.profile(step, model=layer, steps=2, warmup=1, syncs=False)
    assert "ParametrizedLinear" in {r["path"] for r in s["recomputation"]}


def test_a_training_call_after_evaluation_calls_is_new_work():
    """pytorch/examples GAT: each step trains on the whole graph, steps the optimizer, then
    evaluates twice on the same inputs (train and validation masks). The second evaluation
    repeats the first (one call to save); the next step's training call, after them with the
    same weights and inputs, is not: it runs in train mode (dropout) and builds a graph."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x = torch.randn(16, 8)
    with torchdoctor.Profiler(net, syncs=False, hot_lines=False, warmup=1, detail="always") as prof:
        for _ in range(8):
            net.train()
            opt.zero_grad()
            net(x).sum().backward()
            opt.step()
            prof.step()  # (steps end at the optimizer step: the evaluations come first in one)
            net.eval()
            with torch.no_grad():
                net(x)  # the training mask's accuracy
                net(x)  # the validation mask's: the same output
    (record,) = [r for r in prof.session["recomputation"] if r["path"] == "Sequential"]
    assert record["calls_per_step"] == 3.0 and record["identical_input_calls"] == 1.0
    # the call to drop is the repeat (the second evaluation), not the first call's line
    assert record["repeat_site"]["code"] == "net(x)  # the validation mask's: the same output"
    assert record["call_site"]["code"] == "net(x).sum().backward()"
    from torchdoctor.analyze.advice.recompute import loop_invariant

    (advice,) = [a for a in loop_invariant(prof.session.to_dict()) if "Sequential" in a.title]
    line = record["repeat_site"]["line"]
    assert f"test_profiler_recompute.py:{line}" in advice.fix and "reuse" in advice.fix
    assert advice.evidence[2].startswith("repeated at") and "first called at" in advice.evidence[3]


class SparseGraphConv(nn.Module):
    """pytorch/examples GCN's layer: sparse features and a sparse adjacency matrix."""

    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(12, 4))

    def forward(self, features, adjacency):
        return torch.spmm(adjacency, torch.mm(features, self.kernel))


def test_sparse_inputs_are_compared_by_identity_and_version():
    """GCN evaluates the train and validation masks with two model calls on the same sparse
    tensors (no data pointer: they were skipped); a rebuilt sparse tensor is new work."""
    torch.manual_seed(0)
    net = SparseGraphConv()
    features = (torch.rand(10, 12) > 0.7).float().to_sparse()
    adjacency = (torch.eye(10) + torch.rand(10, 10).round()).to_sparse()
    with torchdoctor.Profiler(net, syncs=False, hot_lines=False, warmup=1, detail="always") as prof:
        for _ in range(6):
            net(features, adjacency).sum().backward()
            prof.step()
            with torch.no_grad():
                net(features, adjacency)  # the training mask's metrics
                net(features, adjacency)  # the validation mask's: the same output
                net(features.coalesce() * 1.0, adjacency)  # a new sparse tensor: new work
    (record,) = prof.session["recomputation"]
    assert record["calls_per_step"] == 4.0 and record["identical_input_calls"] == 1.0

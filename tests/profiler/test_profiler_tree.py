"""Tree invariants on real models: children never exceed their parent, (self) holds the rest,
top-level entries add up to the step, phases add up to the wall time."""

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.tree import check_invariants
from torchdoctor.session_read import walk


def _nodes(session):
    return {n["path"]: n for n, _ in walk(session["tree"]) if n["kind"] != "self"}


def _train_step(model, *inputs, lr=0.01):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step():
        opt.zero_grad()
        out = model(*inputs)
        out.float().pow(2).mean().backward()
        opt.step()

    return step


def _steps(prof, model, loss, steps=3):
    """``steps`` SGD steps of ``model`` on ``loss()``, each ended with ``prof.step()``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss().backward()
        opt.step()
        opt.zero_grad()
        prof.step()


def _check(session):
    # (steps that waited for a core, on a busy host, or outliers are left out of the tree,
    # not of the step time: the tree then adds up to its own steps' mean)
    left = session["config"].get("detail") or {}
    tree_only = left.get("busy_steps") or left.get("outlier_steps")
    step = session["tree"]["total_ms"]["mean"] if tree_only else session["step_ms"]["mean"]
    assert check_invariants(session["tree"], step_ms=step) == []
    for step in session["steps"]:
        assert sum(step["phases"].values()) == pytest.approx(step["wall_ms"], rel=1e-6)
        assert all(v >= 0 for v in step["phases"].values())


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Reused(nn.Module):
    """One block applied twice per step (weights shared)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.block = nn.Linear(16, 16)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = torch.relu(self.block(h))
        h = torch.relu(self.block(h))
        return self.out(h)


class ConstantInput(nn.Module):
    """A submodule fed a constant (no grad) input mid-network: a learned position table."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Embedding(8, 12)
        self.proj = nn.Linear(12, 12)

    def forward(self, x):
        positions = torch.arange(x.shape[1])
        return self.proj(x + self.pos(positions))


def test_mlp_tree_adds_up():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
    )
    x = torch.randn(8, 16)
    s = torchdoctor.profile(_train_step(model, x), model=model, steps=3, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    assert {"0", "1", "2", "3", "4"} <= set(nodes)
    for path in ("0", "2", "4"):
        assert nodes[path]["backward_ms"]["mean"] > 0
        assert nodes[path]["calls_per_step"] == 1.0
    assert s["config"]["step_boundary"] == "step_fn"
    assert len(s["steps"]) == 3


def test_small_cnn_tree_adds_up():
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.randn(2, 3, 8, 8)
    s = torchdoctor.profile(_train_step(model, x), model=model, steps=2, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    assert nodes["features.0"]["type"] == "Conv2d"
    assert nodes["features"]["backward_ms"]["mean"] > 0
    assert nodes["head"]["source"]["function"] == "forward"


def test_transformer_tree_adds_up_and_groups_layers():
    torch.manual_seed(0)
    model = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), num_layers=3,
        enable_nested_tensor=False,
    )  # fmt: skip
    x = torch.randn(2, 5, 16)
    s = torchdoctor.profile(_train_step(model, x), model=model, steps=2, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    for i in range(3):
        assert nodes[f"layers.{i}.self_attn"]["backward_ms"]["mean"] > 0
    text = s.tree()
    assert "layers[0-2]  (3 x ~" in text


def test_module_reused_twice_per_step():
    torch.manual_seed(0)
    model = Reused()
    s = torchdoctor.profile(
        _train_step(model, torch.randn(4, 6)), model=model, steps=2, warmup=1, syncs=False
    )
    _check(s)
    block = _nodes(s)["block"]
    assert block["calls_per_step"] == 2.0
    assert block["backward_ms"]["mean"] > 0


def test_module_whose_inputs_need_no_grad():
    torch.manual_seed(0)
    model = ConstantInput()
    x = torch.randn(3, 8, 12)  # data: no grad
    s = torchdoctor.profile(_train_step(model, x), model=model, steps=2, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    assert nodes["pos"]["backward_ms"]["mean"] > 0  # its weight still gets a gradient
    assert nodes["proj"]["backward_ms"]["mean"] > 0


class LearnedQueries(nn.Module):
    """A submodule called on a parameter (a leaf: its backward ends at a tensor hook), as
    DETR-style learned queries or a weight parametrization do."""

    def __init__(self):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(6, 12))
        self.norm = nn.LayerNorm(12)
        self.proj = nn.Linear(12, 12)

    def forward(self, x):
        return self.proj(x) @ self.norm(self.queries).T


def test_gradient_accumulation_with_a_module_on_a_parameter_adds_up():
    """The leaf's tensor hook stays until the step ends: in later micro-steps' backward
    passes it fired again, stretching the first call's backward over the whole step (the
    model's backward was twice the step's backward passes, and 105% of the step in a run)."""
    torch.manual_seed(0)
    model = LearnedQueries()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        for _ in range(4):
            model(torch.randn(5, 12)).pow(2).mean().div(4).backward()
        opt.step()
        opt.zero_grad()

    s = torchdoctor.profile(step, model=model, steps=3, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    assert nodes["norm"]["calls_per_step"] == 4.0
    # the model's backward runs inside the step's backward passes (it was twice their time)
    backward = s["phases"]["backward"]["mean"]
    assert 0 < nodes["LearnedQueries"]["backward_ms"]["mean"] <= backward * 1.05
    assert 0 < nodes["norm"]["backward_ms"]["mean"] <= backward


def test_frozen_submodule():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 1)
    )
    for p in model[0].parameters():  # frozen first layer fed with data: no backward at all
        p.requires_grad_(False)
    for p in model[3].parameters():  # frozen middle layer: gradients still flow through it
        p.requires_grad_(False)
    s = torchdoctor.profile(
        _train_step(model, torch.randn(4, 8)), model=model, steps=2, warmup=1, syncs=False
    )
    _check(s)
    nodes = _nodes(s)
    assert nodes["0"]["backward_ms"]["max"] == 0.0
    assert nodes["1"]["backward_ms"]["max"] == 0.0
    for path in ("2", "3", "4"):
        assert nodes[path]["backward_ms"]["mean"] > 0


def test_model_none_names_every_module_called():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 1])

    def step():
        loss_fn(model(x), y).backward()

    s = torchdoctor.profile(step, steps=2, warmup=0, syncs=False)
    _check(s)
    paths = [c["path"] for c in s["tree"]["children"]]
    assert paths[:2] == ["Sequential", "CrossEntropyLoss"]
    assert "0" in _nodes(s) and "1" in _nodes(s)


class ShapeProbe(nn.Module):
    """Runs a submodule in ``__init__`` to size the head (a common CNN idiom)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 3, 6, 6)).numel()
        self.head = nn.Linear(flat, 2)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_a_submodule_called_in_init_is_named_by_its_model():
    """Built under the profiler (as `torchdoctor run` does), the probe made ``features`` the
    first outermost call: it was named ``Sequential`` with children ``0``, ``1`` and kept those
    names when the model ran. The model adopts it: ``features.0``."""
    with torchdoctor.Profiler(syncs=False, warmup=1) as prof:
        with torchdoctor.region("setup"):
            model = ShapeProbe()
        _steps(prof, model, lambda: model(torch.randn(2, 3, 6, 6)).pow(2).mean())
    session = prof.session
    _check(session)
    paths = set(_nodes(session))
    assert {"ShapeProbe", "features", "features.0", "features.1", "head"} <= paths
    assert not {"Sequential", "0", "1"} & paths
    names = {n["name"] for n, _ in walk(session["tree"])}
    assert "features" in names and "Sequential" not in names


class LossInside(nn.Module):
    """Makes its loss module inside forward, as Hugging Face's models do."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 3)

    def forward(self, x, y):
        return nn.CrossEntropyLoss()(self.head(x), y)


def test_modules_made_per_call_are_one_node_per_class_and_not_kept():
    """A loss made in forward, and one made per step in the loop: a row each (calls 1), not
    a row per instance (CrossEntropyLoss#2, #3, ... at calls 0.03), and no instance kept."""
    torch.manual_seed(0)
    model = LossInside()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    with torchdoctor.Profiler(syncs=False, warmup=1, detail="always") as prof:
        for _ in range(6):
            (model(x, y) + nn.MSELoss()(model.head(x), torch.zeros(4, 3))).backward()
            opt.step()
            opt.zero_grad()
            prof.step()
        nodes_after_steps = len(prof._rec.path)
        held = list(prof._rec.names._keep)
        alive = [ref() for ref in prof._rec.names._refs.values() if ref() is not None]
    session = prof.session
    _check(session)
    calls = {n["path"]: n["calls_per_step"] for n in _nodes(session).values()}
    assert calls["LossInside.CrossEntropyLoss"] == 1.0 and calls["MSELoss"] == 1.0
    assert not any("#" in path for path in calls)
    # the step, LossInside, its head, its loss, head called from the loop, MSELoss: no node
    # per step
    assert nodes_after_steps == 6
    assert held == []  # named by weak references: nothing kept alive by the profiler
    assert not any(isinstance(m, nn.MSELoss) for m in alive)  # (no loss instance lives on)


class StepOwner(nn.Module):
    """Calls its submodules from a method, never from forward (a LightningModule's
    training_step, a GAN's two networks)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def training_step(self, x):
        return self.head(self.encoder(x)).pow(2).mean()


def test_submodules_called_from_their_owners_method_are_named_by_it():
    torch.manual_seed(0)
    owner = StepOwner()
    with torchdoctor.Profiler(syncs=False, warmup=1) as prof:
        _steps(prof, owner, lambda: owner.training_step(torch.randn(4, 6)))
    session = prof.session
    _check(session)
    paths = set(_nodes(session))
    assert {"encoder", "encoder.0", "head"} <= paths  # not Sequential, 0, Linear
    assert not {"Sequential", "Linear"} & paths


def test_two_roots_of_one_class_are_named_by_their_variables():
    """A teacher and its student (DINO, distillation), G and D at top level: Sequential and
    Sequential#2 told the user nothing."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 8), nn.ReLU()).requires_grad_(False)
    student = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    with torchdoctor.Profiler(syncs=False, warmup=1) as prof:
        for _ in range(3):
            x = torch.randn(2, 4)
            with torch.no_grad():
                target = teacher(x)
            (student(x) - target).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    session = prof.session
    _check(session)
    roots = [c["name"] for c in session["tree"]["children"] if c["kind"] == "module"]
    assert roots == ["teacher", "student"]
    assert {"student.0", "student.1"} <= set(_nodes(session))


def test_models_one_variable_held_in_turn_are_numbered_by_it():
    """A search over widths, `net` rebuilt each trial: net, Sequential, Sequential#2."""
    torch.manual_seed(0)
    with torchdoctor.Profiler(syncs=False, detail="always") as prof:
        for width in (8, 16, 32):
            net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 1))
            opt = torch.optim.SGD(net.parameters(), lr=0.01)
            for _ in range(2):
                net(torch.randn(2, 4)).sum().backward()
                opt.step()
                prof.step()
    roots = [c["name"] for c in prof.session["tree"]["children"] if c["kind"] == "module"]
    assert roots == ["net", "net#2", "net#3"]


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.fc(x))


def test_items_of_a_model_called_one_by_one_are_that_models_items():
    """`for block in model: x = block(x)` with `model` a Sequential never called itself: the
    blocks were roots named `block`, `Block`, `Block#2`, `Block#3` (the loop variable, then the
    class), no stack; they are the script's `model`'s items, one stack of four."""
    torch.manual_seed(0)
    model = nn.Sequential(*[_Block() for _ in range(4)])
    with torchdoctor.Profiler(syncs=False, warmup=1) as prof:
        for _ in range(3):
            x = torch.randn(2, 8)
            for block in model:
                x = block(x)
            x.sum().backward()
            prof.step()
    session = prof.session
    _check(session)
    assert {"model.0", "model.1", "model.2", "model.3", "model.0.fc"} <= set(_nodes(session))
    assert not any(p.startswith(("block", "Block")) for p in _nodes(session))
    assert block is model[3]  # (the loop variable held the last one: no name from it)


def test_a_model_held_by_a_wrapper_keeps_its_own_name():
    """ema_pytorch's `EMA(model)` holds the trained model as an attribute: the model is no item
    of it and keeps its own name (not `ema.online_model`)."""

    class EMA(nn.Module):
        def __init__(self, online):
            super().__init__()
            self.online_model, self.ema_model = online, nn.Linear(8, 8)

    model = nn.Linear(8, 8)
    ema = EMA(model)
    with torchdoctor.Profiler(syncs=False, warmup=1) as prof:
        for _ in range(3):
            model(torch.randn(2, 8)).sum().backward()
            prof.step()
    assert ema.online_model is model
    roots = [c["name"] for c in prof.session["tree"]["children"] if c["kind"] == "module"]
    assert roots == ["Linear"]


class _Rotary(nn.Module):
    """A function wrapped as a module and bound to a module-level name, as the `kernels`
    package's `Func` is to transformers 5's `apply_rotary_pos_emb`."""

    def forward(self, q):
        return q * 2


apply_rotary = _Rotary()
apply_scale = _Rotary()


class RotaryAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(4, 4)

    def forward(self, x):
        return apply_scale(apply_rotary(self.q(x)))


def test_a_module_made_elsewhere_and_bound_to_a_global_is_named_by_it():
    """Every attention of a transformers 5 Llama read `Func` (twice, nested): the row is the
    global's name, and two such functions of one class are two rows."""
    model = RotaryAttention()
    with torchdoctor.Profiler(model, syncs=False, warmup=1, detail="always") as prof:
        for _ in range(3):
            model(torch.randn(2, 4)).sum().backward()
            prof.step()
    session = prof.session
    _check(session)
    paths = {n["path"] for n, _ in walk(session["tree"])}
    assert {"RotaryAttention.apply_rotary", "RotaryAttention.apply_scale"} <= paths
    assert not any(path.endswith("_Rotary") for path in paths)

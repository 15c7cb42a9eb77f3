"""Regions get backward time: the backward of the ops run inside ``torchdoctor.region(...)`` is
attributed to the region (as for a module call), not left in the root's (self).

Structure, not tight timings: a region's backward is > 0, the step's unattributed backward
shrinks, and the region's share of the backward is within a factor of 2 of the same code's as a
module (shares within one session, not times across two).
"""

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.tree import check_invariants
from torchdoctor.collect.region_graph import region_boundaries, roots_of, sequence_nr
from torchdoctor.session_read import walk


def _nodes(session):
    return {n["path"]: n for n, _ in walk(session["tree"]) if n["kind"] != "self"}


def _check(session):
    assert check_invariants(session["tree"], step_ms=session["step_ms"]["mean"]) == []


def _bwd(node):
    return node["backward_ms"]["mean"]


def _unattributed_backward(session):
    """The backward phase minus what the top-level modules and regions claimed."""
    tree = session["tree"]
    claimed = sum(_bwd(c) for c in tree["children"] if c["kind"] != "self")
    return _bwd(tree) - claimed


def _heavy_loss(h):
    """A loss of plain tensor ops whose backward dominates the step."""
    acc = h.new_zeros(())
    for i in range(6):
        z = h[:, i::6]
        acc = acc + (z.tanh() * z.sin()).pow(2).mean() + (h @ h.T).softmax(-1).mean()
    return acc


class _HeavyLoss(nn.Module):
    def forward(self, h):
        return _heavy_loss(h)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128))


@pytest.mark.parametrize("syncs", [False, True])
def test_region_loss_gets_backward_like_a_module(syncs):
    net, loss_module = _net(), _HeavyLoss()
    x = torch.randn(96, 32)

    def step_region():
        h = net(x)
        with torchdoctor.region("loss"):
            loss = _heavy_loss(h)
        loss.backward()

    def step_module():
        loss_module(net(x)).backward()

    s_region = torchdoctor.profile(step_region, model=net, steps=3, warmup=1, syncs=syncs)
    s_module = torchdoctor.profile(step_module, steps=3, warmup=1, syncs=syncs)
    for s in (s_region, s_module):
        _check(s)
    region = _nodes(s_region)["loss"]
    module = _nodes(s_module)["_HeavyLoss"]
    assert region["kind"] == "region"
    assert _bwd(region) > 0 and _bwd(module) > 0
    # the region claims the loss's backward: little is left unattributed
    backward = _bwd(s_region["tree"])
    assert _bwd(region) > 0.4 * backward
    assert _unattributed_backward(s_region) < 0.5 * backward
    # about the share of the step's backward the same code gets as a module: shares within one
    # session, so a loaded machine slowing one run and not the other does not matter
    region_share = _bwd(region) / backward
    module_share = _bwd(module) / _bwd(s_module["tree"])
    assert 0.5 < region_share / module_share < 2.0


def test_region_without_backward_gets_none():
    net = _net()
    x = torch.randn(8, 32)

    def step():
        h = net(x)
        with torchdoctor.region("metric"):
            with torch.no_grad():
                metric = h.abs().mean()
        with torchdoctor.region("unused"):
            _ = (h * 2).sum()  # built under grad but never backpropagated
        h.pow(2).mean().backward()
        return metric

    s = torchdoctor.profile(step, model=net, steps=2, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    assert _bwd(nodes["metric"]) == 0.0
    assert _bwd(nodes["unused"]) == 0.0


class _ModuleWithRegion(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(32, 64)

    def forward(self, x):
        h = self.proj(x)
        with torchdoctor.region("normalize"):
            for _ in range(8):
                h = (h - h.mean(-1, keepdim=True)) / (h.std(-1, keepdim=True) + 1e-5)
                h = h.tanh() * 1.5
        return h


def test_region_inside_module_nests_and_adds_up():
    model = _ModuleWithRegion()
    x = torch.randn(64, 32)

    def step():
        model(x).pow(2).mean().backward()

    s = torchdoctor.profile(step, model=model, steps=3, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    region, parent = nodes["_ModuleWithRegion.normalize"], nodes["_ModuleWithRegion"]
    assert region["kind"] == "region"
    assert 0 < _bwd(region) <= _bwd(parent) * 1.02


def test_module_inside_region_and_nested_regions():
    net = _net()
    x = torch.randn(64, 32)

    def step():
        with torchdoctor.region("outer"):
            h = net(x)
            with torchdoctor.region("inner"):
                loss = _heavy_loss(h)
            loss = loss + h.sin().mean()
        loss.backward()

    s = torchdoctor.profile(step, model=net, steps=3, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    outer, inner, module = nodes["outer"], nodes["outer.inner"], nodes["Sequential"]
    assert _bwd(inner) > 0 and _bwd(module) > 0
    assert _bwd(inner) + _bwd(module) <= _bwd(outer) * 1.02
    backward = _bwd(s["tree"])
    assert _unattributed_backward(s) < 0.5 * backward


def test_sibling_regions_reached_through_later_regions():
    """A region's outputs consumed only inside a later region are still found."""
    net = _net()
    x = torch.randn(64, 32)

    def step():
        h = net(x)
        with torchdoctor.region("first"):
            a = _heavy_loss(h) * h  # (64, 128)
        b = a * 0.5  # root-level op between the regions
        with torchdoctor.region("second"):
            loss = _heavy_loss(b)
        torch.autograd.grad(outputs=loss, inputs=list(net.parameters()))

    s = torchdoctor.profile(step, model=net, steps=3, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    assert _bwd(nodes["first"]) > 0 and _bwd(nodes["second"]) > 0


def test_decorated_region_gets_backward():
    net = _net()
    x = torch.randn(64, 32)
    loss_fn = torchdoctor.region("decorated")(_heavy_loss)

    def step():
        loss_fn(net(x)).backward()

    s = torchdoctor.profile(step, model=net, steps=2, warmup=1, syncs=False)
    _check(s)
    assert _bwd(_nodes(s)["decorated"]) > 0


def test_region_boundaries_outputs_and_inputs():
    x = torch.randn(4, requires_grad=True)
    h = x * 2
    e1 = sequence_nr()
    a = h.exp()
    e2 = sequence_nr()
    b = a.sin()  # nested region "b" inside "a's" region
    x2 = sequence_nr()
    c = b + 1
    x1 = sequence_nr()
    loss = (c * a).sum()
    found = region_boundaries([(e1, x1, "outer"), (e2, x2, "inner")], roots_of(loss))
    names = {
        key: (sorted(type(n).__name__ for n in outs), sorted(type(n).__name__ for n in ins))
        for key, (outs, ins) in found.items()
    }
    assert names["outer"] == (["AddBackward0", "ExpBackward0"], ["MulBackward0"])
    assert names["inner"] == (["SinBackward0"], ["ExpBackward0"])
    # a range the graph does not reach, and an empty one, are absent
    assert region_boundaries([(x1 + 100, x1 + 200, "none"), (5, 5, "empty")], [loss.grad_fn]) == {}


@pytest.mark.parametrize("inner_region", [False, True])
def test_region_around_forward_and_backward_adds_up(inner_region):
    """A region open while backward() runs counts that time as its backward, so the modules
    and regions inside it still fit (before: their backward was counted twice)."""
    net = _net()
    x = torch.randn(64, 32)

    def step():
        with torchdoctor.region("step"):
            h = net(x)
            if inner_region:
                with torchdoctor.region("loss"):
                    loss = _heavy_loss(h)
            else:
                loss = _heavy_loss(h)
            loss.backward()

    s = torchdoctor.profile(step, model=net, steps=2, warmup=1, syncs=False)
    _check(s)
    nodes = _nodes(s)
    outer = nodes["step"]
    assert outer["calls_per_step"] == 1.0
    assert _bwd(outer) > 0 and _bwd(nodes["Sequential"]) <= _bwd(outer) * 1.02
    # forward + backward of the region is its wall time: about the step, not more
    assert outer["total_ms"]["mean"] <= s["step_ms"]["mean"] * 1.02
    if inner_region:
        assert 0 < _bwd(nodes["step.loss"]) <= _bwd(outer) * 1.02
    events = s["timeline"]
    assert any(e["cat"] == "region" and e["name"] == "step" for e in events)

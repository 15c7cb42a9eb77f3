"""A module applied to a parameter (a leaf) several times a step: each call's backward ends
when its own node for the leaf has run, not when the leaf's whole gradient is complete.

gpytorch's SVGP example (clients round 21): one shared ``nn.Softplus`` turns raw
hyperparameters into positive ones at each access; the leaf's tensor hook fired only after the
last use, and the kernel math between the uses (outside any module: gpytorch's modules bypass
``nn.Module.__call__``) was the Softplus's backward: 155 ms of a 157 ms backward, 59% of the
step, advised as "softplus dominates the step: compile it"."""

import torch
from torch import nn

import torchdoctor
from torchdoctor.collect.leaf_ends import reader_of
from torchdoctor.session_read import walk


def _nodes(session):
    return {n["path"]: n for n, _ in walk(session["tree"]) if n["kind"] != "self"}


class SharedTransform(nn.Module):
    """``soft`` reads the raw parameter twice a step, heavy work outside modules between."""

    def __init__(self, between):
        super().__init__()
        self.raw = nn.Parameter(torch.zeros(()))
        self.w = nn.Parameter(torch.randn(160, 160) / 16)
        self.soft = nn.Softplus() if between is None else between

    def forward(self, x):
        a = self.soft(self.raw)
        for _ in range(30):  # (functional ops: the parent's (self))
            x = torch.tanh(x @ self.w) * a
        return x.sum() + self.soft(self.raw)


class SoftThenTanh(nn.Module):  # two ops between the leaf and the output
    def forward(self, p):
        return torch.tanh(nn.functional.softplus(p))


def _profile(model):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.randn(160, 160)

    def step():
        opt.zero_grad()
        model(x).pow(2).backward()
        opt.step()

    torch.manual_seed(0)
    return torchdoctor.profile(step, model=model, steps=3, warmup=1, syncs=False)


def test_a_module_on_a_parameter_called_twice_owns_only_its_own_backward():
    session = _profile(SharedTransform(None))
    soft, parent = _nodes(session)["soft"], _nodes(session)["SharedTransform"]
    assert soft["calls_per_step"] == 2.0
    # it was the whole span from its first use's gradient to the last (over 90% of the
    # parent's backward); a softplus on a scalar is a tiny part of 30 matmuls' backward
    assert soft["backward_ms"]["mean"] < 0.25 * parent["backward_ms"]["mean"]


def test_the_end_is_the_node_that_reads_the_leaf_else_the_leafs_own_hook():
    p = nn.Parameter(torch.zeros(3))
    assert reader_of(p, [nn.functional.softplus(p)]).name() == "SoftplusBackward0"
    assert reader_of(p, [nn.functional.softplus(p.detach())]) is None  # (not read: no grad)
    assert reader_of(p, [SoftThenTanh()(p)]) is None  # the leaf's tensor hook, as before
    q = nn.Parameter(torch.zeros(3))
    assert reader_of(q, [nn.functional.softplus(p) * q]).name() == "MulBackward0"


def test_a_module_with_ops_between_the_leaf_and_its_output_still_adds_up():
    session = _profile(SharedTransform(SoftThenTanh()))
    soft, parent = _nodes(session)["soft"], _nodes(session)["SharedTransform"]
    assert soft["calls_per_step"] == 2.0
    assert 0 < soft["backward_ms"]["mean"] <= parent["backward_ms"]["mean"]

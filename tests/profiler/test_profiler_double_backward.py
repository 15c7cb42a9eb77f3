"""A step that differentiates a gradient (a gradient penalty, a Hessian) is noted with the
user's line, and no advice then tells it to torch.compile the model: compiled modules refuse
a double backward. A first-order create_graph pass and torch.func's transforms are none."""

import torch
from torch import nn
from torch.func import functional_call, grad

import torchdoctor
from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.base import prescribes_compile


def _critic():
    return nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))


def _profiled(step, steps=12):
    with torchdoctor.Profiler(syncs=False) as prof:
        for _ in range(steps):
            step()
    return prof.session


def test_a_gradient_penalty_is_a_double_backward_and_gets_no_compile_advice():
    torch.manual_seed(0)
    critic = _critic()
    opt = torch.optim.Adam(critic.parameters())

    def step():
        x = torch.randn(256, 2, requires_grad=True)
        (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)  # the penalty's line
        loss = critic(x).mean() + ((g.norm(dim=1) - 1) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    session = _profiled(step)
    site = session["environment"]["knobs"]["double_backward"]
    assert site.startswith("test_profiler_double_backward.py:")
    line = int(site.rsplit(":", 1)[1])
    with open(__file__) as source:
        assert "the penalty's line" in source.read().splitlines()[line - 1]
    found = advise(session)
    assert not any(prescribes_compile(item) for item in found)
    assert all(
        "double backward" in item.fix for item in found if "torch.compile" in (item.fix or "")
    )
    # the same session without the note: compile is advised (the filter is what removed it)
    session["environment"]["knobs"]["double_backward"] = None
    assert any(prescribes_compile(item) for item in advise(session))


def test_a_hessian_is_a_double_backward():
    torch.manual_seed(0)
    net = _critic()
    w = torch.randn(2, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.01)

    def step():
        hessian = torch.autograd.functional.hessian(lambda v: net(v).sum(), w, create_graph=True)
        opt.zero_grad()
        hessian.trace().backward()
        opt.step()

    site = _profiled(step)["environment"]["knobs"]["double_backward"]
    assert site and site.startswith("test_profiler_double_backward.py:")


def test_first_order_create_graph_and_torch_func_grad_are_none():
    torch.manual_seed(0)
    net = _critic()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def first_order():  # create_graph=True, but nothing differentiates the gradient
        x = torch.randn(8, 2, requires_grad=True)
        torch.autograd.grad(net(x).sum(), x, create_graph=True)

    def functional():  # torch.func.grad asks for create_graph itself, on every call
        x = torch.randn(8, 2)
        grads = grad(lambda p: functional_call(net, p, (x,)).sum())(params)
        for key in params:
            params[key] = params[key] - 0.01 * grads[key]
        net(x).sum().backward()

    assert _profiled(first_order, steps=1)["environment"]["knobs"]["double_backward"] is None
    assert _profiled(functional)["environment"]["knobs"]["double_backward"] is None

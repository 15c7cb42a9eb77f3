"""A model saved whole (``torch.save(model)``, Lightning's checkpoint of hyper-parameters that
hold the model) or deep-copied (a best-model copy, an EMA) while the profiler's hooks are on
one of its modules: the hooks travel as no-ops, never as the profiler (lightning-hydra-template's
MNIST run raised PicklingError at its first checkpoint under ``torchdoctor run``)."""

import copy
import io
import pickle

import torch
from torch import nn

import torchdoctor


def _train_and_save(steps=12, detail="windows"):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    saved, copies = [], []
    with torchdoctor.Profiler(net, syncs=False, detail=detail) as prof:
        for _ in range(steps):
            opt.zero_grad()
            net(torch.randn(4, 8)).pow(2).mean().backward()
            opt.step()
            prof.step()
            buf = io.BytesIO()
            torch.save(net, buf)  # (raised PicklingError: the hook pickled the profiler)
            saved.append(buf.getvalue())
            copies.append(copy.deepcopy(net))
    return net, saved, copies


def test_a_model_saved_whole_or_deep_copied_between_profiled_steps():
    net, saved, copies = _train_and_save()
    assert any(net._forward_pre_hooks for net in copies), "no step left a hook on the model"
    x = torch.randn(2, 8)
    for blob, twin in zip(saved, copies):
        loaded = torch.load(io.BytesIO(blob), weights_only=False)
        assert torch.equal(loaded(x), twin(x))  # the travelled hooks do nothing
        for hook in [*loaded._forward_pre_hooks.values(), *twin._forward_pre_hooks.values()]:
            assert "torchdoctor" not in pickle.dumps(hook).decode("latin-1")

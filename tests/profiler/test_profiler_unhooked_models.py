"""A model whose class defines its own ``__call__`` (gpytorch's ``Module`` calls ``forward``
directly) runs without module hooks: the session says so (clients round 21: an exact GP's
tree held one Softplus and a (self) row of 99.9%, nothing saying why the model was absent)."""

import torch
from torch import nn

import torchdoctor


class LibModule(nn.Module):  # as gpytorch.Module: forward without nn.Module.__call__
    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)


class ExactLike(LibModule):  # as gpytorch's ExactGP: checks, then the base's __call__
    def __call__(self, *inputs, **kwargs):
        return super().__call__(*inputs, **kwargs)


class PyroLike(nn.Module):  # as Pyro's PyroModule: its context, then nn.Module.__call__
    def __call__(self, *args, **kwargs):
        with torch.no_grad():
            pass
        return super().__call__(*args, **kwargs)


class GPModel(ExactLike):
    def __init__(self):
        super().__init__()
        self.raw = nn.Parameter(torch.zeros(()))
        self.mean = nn.Linear(4, 1)
        self.positive = nn.Softplus()  # (a plain torch module it calls: hooked)

    def forward(self, x):
        return self.mean(x).squeeze(-1) * self.positive(self.raw)


def _notes(build):
    with torchdoctor.Profiler(syncs=False, hot_lines=False) as prof:
        model = build()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(4):
            opt.zero_grad()
            model(torch.randn(16, 4)).pow(2).mean().backward()
            opt.step()
            prof.step()
    return prof.session["config"]["notes"]


def test_a_model_that_defines_its_own_call_is_named_in_the_notes():
    (note,) = [n for n in _notes(GPModel) if "defines its own __call__" in n]
    assert "run their forward without nn.Module's hooks" in note
    assert "cannot show them: GPModel (" in note and "Softplus" not in note


def test_a_plain_model_and_torchs_own_wrappers_get_no_note():
    plain = _notes(lambda: nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1), nn.Flatten(0)))
    assert not [n for n in plain if "defines its own __call__" in n]
    from torchdoctor.collect.unhooked_models import own_call

    assert own_call(torch.compile(nn.Linear(1, 1))) is None  # (it calls the module it wraps)
    assert own_call(PyroLike()) is None and own_call(GPModel()) is LibModule

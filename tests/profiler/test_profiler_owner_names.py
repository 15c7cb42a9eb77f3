"""Parts of a model called from methods other than ``forward``, through parts that are called
by method too: named by the outermost model whose method called them (normflows' Real NVP:
``model.forward_kld(x)`` calls each coupling's ``inverse``, which calls its ``param_map``; the
tree read 32 root rows ``param_map``, ``AffineCoupling#2.param_map`` ...)."""

import torch
from torch import nn

import torchdoctor
from torchdoctor.session_read import walk


class Coupling(nn.Module):
    def __init__(self):
        super().__init__()
        self.param_map = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))

    def inverse(self, z):
        return z + self.param_map(z)


class Flow(nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.flows = nn.ModuleList(Coupling() for _ in range(n))

    def forward_kld(self, x):
        for flow in self.flows:
            x = flow.inverse(x)
        return x.pow(2).mean()


class Owner(nn.Module):
    """A near miss: its method calls its parts directly (Lightning's training_step)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(2, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def training_step(self, x):
        return self.head(self.encoder(x)).pow(2).mean()


def _paths(model, loss):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torchdoctor.Profiler(syncs=False, warmup=1) as prof:
        for _ in range(3):
            loss(torch.randn(4, 2)).backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    return {n["path"] for n, _ in walk(prof.session["tree"]) if n["kind"] == "module"}


def test_parts_called_through_methods_of_parts_are_named_by_the_outermost_owner():
    torch.manual_seed(0)
    flow = Flow()
    paths = _paths(flow, flow.forward_kld)
    assert {"flows.0.param_map", "flows.1.param_map", "flows.2.param_map"} <= paths, paths
    assert not any(p.startswith(("Coupling", "param_map")) for p in paths), paths


def test_parts_called_from_their_owners_method_keep_the_owners_names():
    torch.manual_seed(0)
    owner = Owner()
    paths = _paths(owner, owner.training_step)
    assert {"encoder", "encoder.0", "head"} <= paths, paths

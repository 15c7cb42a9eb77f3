"""A stateless module the loop calls outside any forward (a loss: ``criterion(G(x), x)``) is
one node named by its variable; when a later model renames earlier ones (a second model of one
class: ``G_AB``, ``G_BA``), the re-read of the paths kept that name, not ``.criterion``
(PyTorch-GAN's CycleGAN read root rows ``.criterion_identity`` and ``.criterion_GAN``)."""

import torch
from torch import nn

import torchdoctor
from torchdoctor.session_read import walk


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(4, 4), nn.Tanh())

    def forward(self, x):
        return self.model(x)


criterion_identity = nn.L1Loss()  # (a script's global, as in the CycleGAN)


def _paths(calls):
    torch.manual_seed(0)
    g_ab, g_ba = Generator(), Generator()
    opt = torch.optim.SGD([*g_ab.parameters(), *g_ba.parameters()], lr=0.01)
    with torchdoctor.Profiler(syncs=False, warmup=1) as prof:
        for _ in range(3):
            x = torch.randn(2, 4)
            calls(g_ab, g_ba, x).backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    return {n["path"] for n, _ in walk(prof.session["tree"]) if n["kind"] == "module"}


def test_a_loss_called_before_a_second_model_of_its_class_keeps_its_name():
    # the loss is named before g_ba's first call renames g_ab (two roots of one class)
    paths = _paths(lambda g_ab, g_ba, x: criterion_identity(g_ab(x), x) + criterion_identity(g_ba(x), x))
    assert "criterion_identity" in paths, paths
    assert not any(p.startswith(".") for p in paths), paths
    assert {"g_ab", "g_ba"} <= paths, paths


def test_a_loss_called_after_both_models_keeps_its_name():
    # near miss: no renaming after the loss was named
    paths = _paths(lambda g_ab, g_ba, x: criterion_identity(g_ab(x) + g_ba(x), x))
    assert "criterion_identity" in paths and not any(p.startswith(".") for p in paths), paths

"""A loop that slices a tensor which requires grad at its loop variable (mamba.py's sequential
scan, ``h = deltaA[:, t] * h + BX[:, t]``) spends its backward in the slices: each writes a
zero gradient the size of the whole tensor. The line is told to unbind the tensors once (a
measured saving), and the layers' "backward far above forward" is the same advice, not two
more (the scan in two layers gave four entries for one cause)."""

import torch
from torch import nn

from tests.hotlines.hotlines_helpers import lines_at, marked_line, profile


class Scan(nn.Module):
    def __init__(self, width: int = 64, state: int = 16) -> None:
        super().__init__()
        self.decay = nn.Parameter(torch.rand(width, state))
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deltaA = torch.exp(-torch.nn.functional.softplus(self.proj(x)).unsqueeze(-1) * self.decay)
        BX = x.unsqueeze(-1) * deltaA
        h = torch.zeros_like(deltaA[:, 0])
        hs = []
        for t in range(x.shape[1]):
            h = deltaA[:, t] * h + BX[:, t]  # SCAN
            hs.append(h)
        return torch.stack(hs, dim=1).sum(-1)


def unbound(model: Scan, x: torch.Tensor) -> torch.Tensor:
    """The cure, for the equivalence check."""
    deltaA = torch.exp(
        -torch.nn.functional.softplus(model.proj(x)).unsqueeze(-1) * model.decay
    )
    BX = x.unsqueeze(-1) * deltaA
    h, hs = torch.zeros_like(deltaA[:, 0]), []
    for a_t, b_t in zip(deltaA.unbind(1), BX.unbind(1)):
        h = a_t * h + b_t
        hs.append(h)
    return torch.stack(hs, dim=1).sum(-1)


def test_the_cure_gives_the_same_values_and_gradients():
    torch.manual_seed(0)
    model, x = Scan(), torch.randn(4, 16, 64)
    slow, fast = model(x), unbound(model, x)
    torch.testing.assert_close(slow, fast)
    g_slow = torch.autograd.grad(slow.square().sum(), model.decay)
    g_fast = torch.autograd.grad(fast.square().sum(), model.decay)
    torch.testing.assert_close(g_slow, g_fast)


def test_a_scan_that_slices_per_step_is_told_to_unbind_once():
    torch.manual_seed(0)
    model = nn.Sequential(Scan(), Scan())
    x = torch.randn(8, 128, 64)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    session = profile(step, steps=5, model=model)
    (row,) = [r for r in lines_at(session, __file__, marked_line(Scan.forward, "SCAN"))][:1]
    assert row["top_ops"][0]["op"] == "Tensor.__getitem__"
    told = [a for a in session["advice"] if "unbind the tensor once" in a["title"]]
    assert len(told) == 1, [a["title"] for a in session["advice"]]
    (item,) = told
    assert item["estimated_saving_ms"] > 0
    assert any("the slices' backward, measured" in e for e in item["evidence"])
    # no second entry for the same cause: the layers' backward, their dominance
    for other in session["advice"]:
        if other is not item:
            assert "Backward of" not in other["title"], other["title"]
            assert "start at its heaviest line" not in other["title"], other["title"]

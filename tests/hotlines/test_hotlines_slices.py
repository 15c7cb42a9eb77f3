"""A loop that slices a tensor which requires grad at its loop variable (mamba.py's sequential
scan, ``h = deltaA[:, t] * h + BX[:, t]``) spends its backward in the slices: each writes a
zero gradient the size of the whole tensor. The line is told to unbind the tensors once (a
measured saving), and the layers' "backward far above forward" is the same advice, not two
more (the scan in two layers gave four entries for one cause)."""

import pytest
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


def _scan_session(owner_backward: float) -> dict:
    """A slicing line in a module whose own backward is ``owner_backward`` ms, 25 of them the
    line's (mamba-minimal's mixers: 439 ms of (self) backward, 215 in its lines)."""
    row = {"file": "/a/scan.py", "line": 9, "location": "scan.py:9", "owner": "mixer",
           "function": "scan", "code": "h = a[:, t] * h + b[:, t]", "loop_line": 8,
           "total_ms": {"mean": 30.0}, "forward_ms": {"mean": 5.0},
           "backward_ms": {"mean": 25.0}, "calls_per_step": 64, "torch_calls_per_step": 192,
           "top_ops": [{"op": "Tensor.__getitem__", "forward_ms": 1.0, "backward_ms": 22.0,
                        "calls_per_step": 128},
                       {"op": "Tensor.mul", "forward_ms": 2.0, "backward_ms": 3.0,
                        "calls_per_step": 64}]}  # fmt: skip
    mixer = {"path": "mixer", "name": "mixer", "kind": "module", "calls_per_step": 1.0,
             "forward_ms": {"mean": 10.0}, "backward_ms": {"mean": owner_backward},
             "forward_self_ms": {"mean": 10.0}, "backward_self_ms": {"mean": owner_backward},
             "total_ms": {"mean": 10.0 + owner_backward}}  # fmt: skip
    tree = {"path": "", "name": "step", "kind": "root", "children": [mixer],
            "total_ms": {"mean": 100.0}}  # fmt: skip
    return {"step_ms": {"mean": 100.0}, "tree": tree, "hot_lines": {"lines": [row]}}


def test_the_unbind_range_reaches_the_owners_backward_no_line_holds():
    from torchdoctor.analyze.advice.hot_lines import hot_line_advice

    (item,) = hot_line_advice(_scan_session(65.0))  # 40 ms of sums outside the line
    low, high = item.saving_range_ms
    assert "unbind the tensor once" in item.title
    assert high == pytest.approx(low + 40.0)
    assert any("no measured line holds" in e for e in item.evidence)
    (held,) = hot_line_advice(_scan_session(25.0))  # a near miss: the line holds it all
    assert held.saving_range_ms[1] < held.saving_range_ms[0] + 1.0
    assert not any("no measured line holds" in e for e in held.evidence)

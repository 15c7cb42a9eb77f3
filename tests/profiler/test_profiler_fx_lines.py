"""A torch.fx GraphModule's generated forward: its lines are named by the generated code's own
name, never as a line of the file the traced module came from (odd2's a_fx.py showed
`relu = torch._C._nn.gelu(a)` as "a_fx.py:6 in forward:6")."""

from __future__ import annotations

import torch
from torch import fx, nn

import torchdoctor
from torchdoctor.render.console import render_console


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) * 2)


def test_generated_fx_lines_are_named_by_the_generated_code():
    torch.manual_seed(0)
    gm = fx.symbolic_trace(Net())
    opt = torch.optim.SGD(gm.parameters(), lr=0.01)
    with torchdoctor.Profiler(gm, detail="always", syncs=False) as prof:
        for _ in range(6):
            gm(torch.randn(32, 16)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    session = prof.session.to_dict()
    rows = (session.get("hot_lines") or {}).get("lines") or []
    generated = [r for r in rows if str(r["file"]).startswith("<")]
    assert generated, [r["location"] for r in rows]
    for row in generated:
        assert row["location"].startswith("<eval_with_key>") and " in forward" not in row["location"]
    assert " in forward:" not in render_console(session, width=160)
    mine = [r for r in rows if r["file"] == __file__]  # (a real file keeps its base name)
    assert mine and all(r["location"].startswith("test_profiler_fx_lines.py:") for r in mine)

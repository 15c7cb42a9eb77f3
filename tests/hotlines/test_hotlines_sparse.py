"""A matrix multiply with a sparse operand is named apart (``torch.mm[sparse_coo]``) and gets
the layout's cure, not the dense matmul's (pytorch/examples GCN: sparse features and
adjacency, where bf16 and multiples of 64 do not apply)."""

import torch
from torch import nn

from tests.hotlines.hotlines_helpers import lines_at, marked_line, profile


class SparseGraphConv(nn.Module):
    def __init__(self, features, hidden):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(features, hidden) * 0.1)

    def forward(self, x, adjacency):
        support = torch.mm(x, self.kernel)  # features
        return torch.spmm(adjacency, support)  # adjacency


def test_a_sparse_matmul_line_is_named_by_its_layout_and_told_to_change_it():
    torch.manual_seed(0)
    nodes, features = 600, 800
    x = ((torch.rand(nodes, features) < 0.02).float()).to_sparse()
    adjacency = ((torch.rand(nodes, nodes) < 0.01).float() + torch.eye(nodes)).to_sparse()
    layer = SparseGraphConv(features, 16)
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        layer(x, adjacency).square().mean().backward()
        opt.step()

    session = profile(step, steps=4, model=layer)
    here = SparseGraphConv.forward.__code__.co_filename
    for marker in ("features", "adjacency"):
        (row,) = lines_at(session, here, marked_line(SparseGraphConv.forward, marker))
        assert row["top_ops"][0]["op"] == "torch.mm[sparse_coo]"  # (torch.spmm is torch.mm)
    sparse = [a for a in session["advice"] if a.get("cause") == "sparse-layout"]
    assert sparse and all("to_sparse_csr()" in a["fix"] for a in sparse)
    assert not any("bf16" in a["fix"] for a in session["advice"] if a["rule"] == "hot-line")

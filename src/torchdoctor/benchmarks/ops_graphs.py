"""A GAT layer in pytorch/examples' dense form against its edge form with
:func:`torchdoctor.ops.edge_softmax` (the cure lint TD514 gives a softmax of N x N scores masked
by an adjacency matrix).

The dense layer scores every pair of nodes, masks the pairs that are no edge with
``torch.where(adj > 0, e, -9e16)``, softmaxes each row and multiplies by the node features;
the edge layer scores the edges only (their endpoints' scores gathered), normalises them with
``edge_softmax`` grouped by row, and sums each row's weighted neighbours with ``index_add_``.
Cora's shapes: 2,708 nodes, 13,264 edges with self-loops (0.18% of the pairs), 8 heads of 8
features (pytorch/examples gat/main.py's first layer after its input projection); and a batch of
small dense graphs (64 molecules of 40 atoms, 10% of the pairs), where the dense form is faster. Both are
timed forward (an evaluation) and forward + backward (training); outputs and gradients are
compared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchdoctor.measure import BenchTable, compare
from torchdoctor.ops import edge_softmax
from torchdoctor.ops.reference.graphs import masked_softmax_before

#: (case, nodes, edges besides the self-loops, heads, features per head)
CASES = (
    ("Cora's size: 2,708 nodes, 10,556 edges + self-loops, 8 heads x 8", 2708, 10556, 8, 8),
    ("5,000 nodes, 25,000 edges + self-loops, 4 heads x 16", 5000, 25000, 4, 16),
)


def gat_pair(nodes: int, edges: int, heads: int, width: int, seed: int = 0):
    """(the dense GAT layer, its edge form) as functions of the node features, and those
    features (requiring grad); both share one random graph and one set of weights.

    Example:
        >>> dense, sparse, h = gat_pair(30, 60, 2, 4)
        >>> torch.allclose(dense(h), sparse(h), atol=1e-5)
        True
    """
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, nodes, (edges,), generator=g)
    cols = torch.randint(0, nodes, (edges,), generator=g)
    adj = torch.zeros(nodes, nodes, dtype=torch.long)
    adj[rows, cols] = 1
    adj |= torch.eye(nodes, dtype=torch.long)  # (self-loops, as GAT adds them)
    rows, cols = adj.nonzero(as_tuple=True)  # (once, outside the step: the graph is fixed)
    weight = torch.randn(heads * width, heads * width, generator=g) / (heads * width) ** 0.5
    attend = torch.randn(heads, 2 * width, 1, generator=g) / width**0.5

    def project(h: torch.Tensor):
        ht = (h @ weight).view(nodes, heads, width).permute(1, 0, 2)  # (heads, nodes, width)
        return ht, ht @ attend[:, :width], ht @ attend[:, width:]  # (and each side's score)

    def dense(h: torch.Tensor) -> torch.Tensor:  # pytorch/examples gat/main.py's forward
        ht, source, target = project(h)
        e = F.leaky_relu(source + target.mT, 0.2)  # (heads, nodes, nodes)
        return masked_softmax_before(e, adj) @ ht

    def sparse(h: torch.Tensor) -> torch.Tensor:
        ht, source, target = project(h)
        e = F.leaky_relu(source[:, rows, 0] + target[:, cols, 0], 0.2)  # (heads, edges)
        weights = edge_softmax(e, rows, nodes, dim=-1)
        return torch.zeros_like(ht).index_add_(1, rows, weights.unsqueeze(-1) * ht[:, cols])

    h = torch.randn(nodes, heads * width, generator=g, requires_grad=True)
    return dense, sparse, h


def batched_gat_pair(graphs: int, nodes: int, density: float, heads: int, width: int,
                     seed: int = 0):  # fmt: skip
    """The same pair over a batch of small graphs (molecules): the dense layer on ``(graphs,
    heads, nodes, nodes)`` scores, the edge layer on the batch's edges as one graph of
    ``graphs x nodes`` nodes; and the features ``(graphs, nodes, heads x width)``.

    Example:
        >>> dense, sparse, h = batched_gat_pair(3, 5, 0.3, 2, 4)
        >>> torch.allclose(dense(h), sparse(h), atol=1e-5)
        True
    """
    g = torch.Generator().manual_seed(seed)
    adj = (torch.rand(graphs, nodes, nodes, generator=g) < density).long()
    adj |= torch.eye(nodes, dtype=torch.long)
    batch, rows, cols = adj.nonzero(as_tuple=True)
    rows, cols = batch * nodes + rows, batch * nodes + cols  # (one graph of all the nodes)
    weight = torch.randn(heads * width, heads * width, generator=g) / (heads * width) ** 0.5
    attend = torch.randn(heads, 2 * width, 1, generator=g) / width**0.5
    total = graphs * nodes

    def project(h: torch.Tensor):
        ht = (h @ weight).view(graphs, nodes, heads, width).permute(0, 2, 1, 3)
        return ht, ht @ attend[:, :width], ht @ attend[:, width:]

    def dense(h: torch.Tensor) -> torch.Tensor:
        ht, source, target = project(h)
        e = F.leaky_relu(source + target.transpose(-1, -2), 0.2)  # (graphs, heads, n, n)
        return masked_softmax_before(e, adj.unsqueeze(1)) @ ht

    def sparse(h: torch.Tensor) -> torch.Tensor:
        ht, source, target = project(h)
        flat = ht.permute(1, 0, 2, 3).reshape(heads, total, width)
        s = source.permute(1, 0, 2, 3).reshape(heads, total)
        t = target.permute(1, 0, 2, 3).reshape(heads, total)
        weights = edge_softmax(F.leaky_relu(s[:, rows] + t[:, cols], 0.2), rows, total, dim=-1)
        out = torch.zeros_like(flat).index_add_(1, rows, weights.unsqueeze(-1) * flat[:, cols])
        return out.view(heads, graphs, nodes, width).permute(1, 0, 2, 3)

    h = torch.randn(graphs, nodes, heads * width, generator=g, requires_grad=True)
    return dense, sparse, h


def run(quick: bool = False) -> list[BenchTable]:
    """The dense GAT layer against its edge form, forward and forward + backward.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.columns[:3], len(table.rows)
        (['case', 'dense ms', 'edges ms'], 4)
    """
    repeats = 3 if quick else 15
    cases = (("a 400-node graph, 1,600 edges, 2 heads x 4", 400, 1600, 2, 4),) if quick else CASES
    table = BenchTable(
        "GAT layer: dense masked softmax over N x N vs edge_softmax over the edges "
        "(interleaved, median of per-pair ratios)",
        ["case", "dense ms", "edges ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    pairs = [(name, gat_pair(nodes, edges, heads, width))
             for name, nodes, edges, heads, width in cases]  # fmt: skip
    graphs, nodes = (4, 10) if quick else (64, 40)
    pairs.append((f"{graphs} graphs of {nodes} nodes at 10% + self-loops (molecules), 4 heads "
                  "x 16", batched_gat_pair(graphs, nodes, 0.1, 4, 16)))  # fmt: skip
    for name, (dense, sparse, h) in pairs:
        for pass_, grads in (("forward", False), ("forward + backward", True)):
            result = compare(dense, sparse, h, repeats=repeats, grads=grads, rtol=1e-4,
                             atol=1e-5, names=("dense", "edges"))  # fmt: skip
            table.add_row(f"{name}, {pass_}", *result.row())
    table.notes.append(
        "speedup = dense time / edge time, per interleaved pair; the edge list is read from the "
        "adjacency once, outside the timed calls (the graph is fixed); 'forward + backward': the "
        f"gradient with respect to the node features too; {torch.get_num_threads()} intra-op "
        f"thread(s), CPU, torch {torch.__version__}"
    )
    return [table]


if __name__ == "__main__":  # python -m torchdoctor.benchmarks.<name> [--quick]
    import sys

    for result_table in run(quick="--quick" in sys.argv):
        print(result_table.to_markdown())

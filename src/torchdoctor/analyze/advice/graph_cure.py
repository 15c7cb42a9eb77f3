"""The cure of dense graph attention (lint TD514): the edges' softmax, not the N x N one.

A hot line holding a GAT layer's ``torch.where(adj > 0, e, -9e15)`` ... ``softmax`` pattern
(the lines from the mask's fill to the product with the features, TD514's ``pattern_lines``)
is cured by scoring the edges only and normalising them per node with
``torchdoctor.ops.edge_softmax``. Its gain depends on the graph's density, which the run does
not record: 96-105x on a large sparse graph (Cora's size), 0.73x on a batch of small dense
graphs (BENCHMARKS.md, suite ``ops``, ``ops_graphs``), so it states a bound, no saving.

Example:
    >>> GRAPH_ATTENTION.speedup.high > 100, GRAPH_ATTENTION.references[0]
    (True, 'TD514')
"""

from __future__ import annotations

from torchdoctor.analyze.advice.base import Speedup
from torchdoctor.analyze.advice.cure import Cure

GRAPH_ATTENTION = Cure(
    "edge_softmax",
    "score the graph's edges only and softmax them per node",
    "The scores of every pair of nodes are computed, masked by the adjacency and softmaxed, "
    "where the graph has a few edges per node: read the edge list once (rows, cols = "
    "adj.nonzero(as_tuple=True): the graph is fixed), score the edges only, normalise them "
    "with torchdoctor.ops.edge_softmax(e, rows, num_nodes=N, dim=-1) and sum each node's "
    "weighted neighbours with index_add_ (or use PyG's GATConv, the same layer on edge lists). "
    "Check the graph's density first, adj.float().mean(): the edge form wins on a large sparse "
    "graph and loses on small dense ones (a batch of molecules).",
    Speedup(
        0.73,
        104.7,
        "BENCHMARKS.md suite 'ops' ops_graphs (CPU, interleaved, forward + backward): a GAT layer, "
        "dense masked softmax vs edge_softmax, 95.8x at Cora's size (2,708 nodes, 0.18% of the "
        "pairs edges) and 105x at 5,000 nodes; but 0.73x on a batch of 64 small graphs of 40 "
        "nodes at 10% (molecules): the edge form wins on a large sparse graph, check its density "
        "with adj.float().mean()",
        realized=0.5,  # (ranked by half its bound: the mean of its two measured kinds of graph)
    ),
    ("TD514", "torchdoctor.ops.edge_softmax"),
    "e = torch.where(adj > 0, e, -9e15 * torch.ones_like(e)); a = F.softmax(e, dim=-1)  # before\n"
    "rows, cols = adj.nonzero(as_tuple=True)  # once\n"
    "a = torchdoctor.ops.edge_softmax(s[:, rows] + t[:, cols], rows, num_nodes=N, dim=-1)\n"
    "out = torch.zeros_like(h).index_add_(1, rows, a.unsqueeze(-1) * h[:, cols])  # after",
)

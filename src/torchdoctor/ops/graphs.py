"""Graph attention over a graph's edges, not its dense N x N adjacency.

pytorch/examples' GAT scores every pair of nodes, ``e[h, i, j] = s[h, i] + t[h, j]`` over
all N x N pairs, masks the pairs that are no edge (``torch.where(adj > 0, e, -9e16)``),
softmaxes each row and multiplies the result by the node features: on Cora (2,708 nodes,
0.2% of the pairs connected) it computes, stores and backpropagates 8 x 2,708 x 2,708 scores
for 13,264 edges. :func:`edge_softmax` normalises scores per edge instead, grouped by the node
whose row they are (the softmax's row), with no host sync when ``num_nodes`` is given; the
same layer then costs its edges, not N squared (PyG's ``GATConv`` measured 15-20x faster than
the dense form on that graph; this module's form: BENCHMARKS.md, suite ``ops``, ``ops_graphs``).

The dense form's rows with no edge at all get 1/N for every node (a softmax of all -9e16);
here such a node has no edge, so no weight: add self-loops, as GAT does, to give every row one.

Example:
    >>> import torch
    >>> scores = torch.tensor([1.0, 2.0, 3.0, 0.5])
    >>> rows = torch.tensor([0, 0, 1, 1])  # edges (0, a), (0, b), (1, c), (1, d)
    >>> [round(x, 4) for x in edge_softmax(scores, rows, num_nodes=2).tolist()]
    [0.2689, 0.7311, 0.9241, 0.0759]
"""

from __future__ import annotations

import torch

from torchdoctor.ops._validation import (
    require_count,
    require_float,
    require_integer,
    require_same_device,
    require_tensor,
    widen_integer,
)

__all__ = ["edge_softmax"]


def edge_softmax(
    scores: torch.Tensor, index: torch.Tensor, num_nodes: int | None = None, *, dim: int = 0
) -> torch.Tensor:
    """Softmax of per-edge ``scores`` within each group of edges that share an ``index`` entry
    (the node whose softmax row the edge is in): the edge form of
    ``torch.where(adj > 0, e, -inf).softmax(-1)`` read at the edges.

    ``scores`` has the edges along ``dim`` (``(E, heads)`` with ``dim=0``, ``(heads, E)``
    with ``dim=-1``); ``index`` is ``(E,)`` integers in ``0 <= i < num_nodes``. Without
    ``num_nodes`` it is read as ``index.max() + 1``: one host sync; give it (a graph's node
    count is known) to have none. Differentiable in ``scores``; the per-group maximum it
    subtracts for stability is a constant (its gradient is zero anyway).

    Example:
        >>> import torch
        >>> adj = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 1]])
        >>> e = torch.randn(2, 3, 3)                   # (heads, rows, columns): dense scores
        >>> rows, cols = adj.nonzero(as_tuple=True)    # once: the graph does not change
        >>> att = edge_softmax(e[:, rows, cols], rows, num_nodes=3, dim=-1)
        >>> dense = torch.where(adj > 0, e, torch.tensor(-9e16)).softmax(-1)
        >>> torch.allclose(att, dense[:, rows, cols])
        True
    """
    require_tensor(scores, "scores")
    require_float(scores, "scores")
    require_tensor(index, "index")
    require_integer(index, "index")
    require_same_device(scores=scores, index=index)
    if scores.dim() == 0:
        raise ValueError("edge_softmax: scores must have an edge dimension, got a 0-dim tensor")
    if not -scores.dim() <= dim < scores.dim():
        raise ValueError(
            f"edge_softmax: dim={dim} is out of range for scores of shape "
            f"{tuple(scores.shape)} (give the dimension that holds the edges)"
        )
    dim = dim % scores.dim()
    if index.dim() != 1 or index.shape[0] != scores.shape[dim]:
        raise ValueError(
            f"edge_softmax: index must be 1-D with one entry per edge, scores.shape[{dim}] = "
            f"{scores.shape[dim]}; got index of shape {tuple(index.shape)}"
        )
    index = widen_integer(index)
    if num_nodes is None:
        num_nodes = int(index.max()) + 1 if index.numel() else 0  # (the one host sync)
    num_nodes = require_count(num_nodes, "num_nodes", what="a non-negative int or None")
    moved = scores.movedim(dim, 0)  # (edges first: scatter along dimension 0)
    grouped = (num_nodes, *moved.shape[1:])
    spread = index.view(-1, *([1] * (moved.dim() - 1))).expand_as(moved)
    with torch.no_grad():  # (a constant shift: the softmax is the same, its gradient zero)
        peak = torch.full(grouped, float("-inf"), dtype=moved.dtype, device=moved.device)
        try:
            peak = peak.scatter_reduce(0, spread, moved, "amax", include_self=True)
        except (RuntimeError, IndexError) as error:  # (a CPU index outside 0..num_nodes - 1)
            raise ValueError(
                f"edge_softmax: an index entry is outside 0..num_nodes - 1 = 0..{num_nodes - 1} "
                f"({error}); give the graph's node count as num_nodes, or leave it None to read "
                "it from index"
            ) from error
    shifted = (moved - peak.gather(0, spread)).exp()
    total = torch.zeros(grouped, dtype=moved.dtype, device=moved.device)
    total = total.scatter_add(0, spread, shifted)
    return (shifted / total.gather(0, spread)).movedim(0, dim)

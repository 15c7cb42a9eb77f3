"""edge_softmax: the edge form of a GAT layer's masked dense softmax, checked against the dense
"before" (pytorch/examples' `torch.where(adj > 0, e, -9e16).softmax(-1)`) at every edge, in
value and gradient, with no host sync when the node count is given."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchdoctor.ops import edge_softmax
from torchdoctor.ops.reference.graphs import masked_softmax_before
from torchdoctor.testing import count_host_syncs


def _graph(n: int, density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    adj = (torch.rand(n, n, generator=g) < density).long()
    return adj | torch.eye(n, dtype=torch.long)  # (self-loops: every row has an edge)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 9), heads=st.sampled_from([(), (1,), (3,)]),
       density=st.sampled_from([0.0, 0.2, 0.6, 1.0]), seed=st.integers(0, 999))  # fmt: skip
def test_matches_the_dense_masked_softmax_at_every_edge_with_its_gradient(n, heads, density, seed):
    adj = _graph(n, density, seed)
    g = torch.Generator().manual_seed(seed + 1)
    dense = (3 * torch.randn(*heads, n, n, generator=g, dtype=torch.float64)).requires_grad_()
    rows, cols = adj.nonzero(as_tuple=True)
    weights = torch.randn(*heads, rows.numel(), generator=g, dtype=torch.float64)
    before = masked_softmax_before(dense, adj)[..., rows, cols]
    (before * weights).sum().backward()
    expected_grad, dense.grad = dense.grad.clone(), None
    after = edge_softmax(dense[..., rows, cols], rows, num_nodes=n, dim=-1)
    (after * weights).sum().backward()
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(dense.grad, expected_grad)
    # each row's weights add up to one
    sums = torch.zeros(*heads, n, dtype=after.dtype).index_add_(-1, rows, after.detach())
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_edges_first_and_edges_last_agree():
    scores = torch.randn(7, 4)  # (edges, heads)
    index = torch.tensor([0, 2, 2, 1, 0, 2, 1])
    first = edge_softmax(scores, index, 3)
    last = edge_softmax(scores.T.contiguous(), index, 3, dim=-1)
    torch.testing.assert_close(first, last.T)
    torch.testing.assert_close(first, edge_softmax(scores, index))  # (node count read)


def test_no_host_sync_when_the_node_count_is_given_one_when_it_is_read():
    scores, index = torch.randn(10, 2), torch.tensor([0, 1, 1, 2, 3, 3, 3, 0, 2, 1])
    with count_host_syncs() as given_count:
        edge_softmax(scores, index, num_nodes=4)
    with count_host_syncs() as read:
        edge_softmax(scores, index)
    assert given_count.count == 0, given_count.ops
    assert read.count == 1, read.ops


def test_large_and_masked_scores_stay_finite_and_half_precision_works():
    index = torch.tensor([0, 0, 1, 1])
    big = edge_softmax(torch.tensor([1000.0, 999.0, -1000.0, float("-inf")]), index, 2)
    assert torch.isfinite(big).all() and big[3] == 0.0 and big[2] == 1.0
    scores = torch.randn(64, 4)
    rows = torch.randint(0, 8, (64,), generator=torch.Generator().manual_seed(0))
    full = edge_softmax(scores, rows, 8)
    for dtype in (torch.bfloat16, torch.float16):
        low = edge_softmax(scores.to(dtype), rows, 8)
        assert low.dtype == dtype
        torch.testing.assert_close(low.float(), full, atol=2e-2, rtol=2e-2)


def test_no_edges_gives_an_empty_result():
    out = edge_softmax(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 3)


@pytest.mark.parametrize("call, error, words", [
    (lambda: edge_softmax([1.0], torch.tensor([0])), TypeError, "scores must be a torch.Tensor"),
    (lambda: edge_softmax(torch.tensor([1, 2]), torch.tensor([0, 0])), TypeError, "floating-point"),
    (lambda: edge_softmax(torch.zeros(2), torch.tensor([0.0, 1.0])), TypeError, "integer tensor"),
    (lambda: edge_softmax(torch.zeros(3), torch.tensor([0, 1])), ValueError, "one entry per edge"),
    (lambda: edge_softmax(torch.zeros(2), torch.tensor([[0, 1]])), ValueError, "1-D"),
    (lambda: edge_softmax(torch.tensor(1.0), torch.tensor([0])), ValueError, "0-dim"),
    (lambda: edge_softmax(torch.zeros(2), torch.tensor([0, 1]), dim=1), ValueError, "dim=1"),
    (lambda: edge_softmax(torch.zeros(2), torch.tensor([0, 4]), 3), ValueError, "0..2"),
    (lambda: edge_softmax(torch.zeros(2), torch.tensor([0, -1])), ValueError, "outside"),
    (lambda: edge_softmax(torch.zeros(2), torch.tensor([0, 1]), -2), ValueError, "num_nodes"),
    (lambda: edge_softmax(torch.zeros(2), torch.tensor([0, 1]), True), ValueError, "num_nodes"),
])  # fmt: skip
def test_bad_input_is_refused_with_what_to_give(call, error, words):
    with pytest.raises(error, match=words):
        call()

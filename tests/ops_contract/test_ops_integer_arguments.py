"""Integer arguments accept any integer-like (NumPy integers too); bool, floats and tensors
are still rejected with an error naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchdoctor.ops import (
    cholesky_factor,
    dpp_greedy,
    group_by_segment,
    pad_segments,
    select_tokens_per_segment,
    sinkhorn,
    two_stage_negatives,
)

IDS = torch.tensor([0, 1, 0])


def _mine(top_m):
    pool = torch.tensor([[3.0, 0.0], [1.5, 0.0], [0.2, 0.0]])
    anchors, positives = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
    labels = torch.tensor([0]), torch.tensor([1, 1, 1])
    return two_stage_negatives(anchors, positives, pool, *labels, torch.eye(2), top_m=top_m)


CALLS = {
    "k": lambda v: dpp_greedy(torch.eye(3), k=v).indices,
    "max_k": lambda v: dpp_greedy(torch.eye(3), k=torch.tensor(2), max_k=v).indices,
    "keep_per_segment": lambda v: select_tokens_per_segment(
        torch.eye(4), torch.tensor([0, 0, 1, 1]), keep_per_segment=v
    ),
    "num_segments": lambda v: group_by_segment(IDS, num_segments=v)[1],
    "max_len": lambda v: pad_segments(torch.arange(3.0), IDS, max_len=v)[0],
    "top_m": lambda v: _mine(v).indices,
    "iters": lambda v: sinkhorn(torch.zeros(2, 2), iters=v).plan,
    "max_tries": lambda v: cholesky_factor(torch.ones(2, 2), max_tries=v)[1],
}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint8])
def test_numpy_integers_are_accepted(name, kind):
    call = CALLS[name]
    assert torch.equal(call(kind(2)), call(2))


REJECTED = [
    (name, bad)
    for name in sorted(CALLS)
    for bad in (True, 2.0, np.float64(2.0), torch.tensor(2))
    if not (name == "k" and isinstance(bad, torch.Tensor))  # dpp_greedy takes a k tensor
]


@pytest.mark.parametrize(("name", "bad"), REJECTED)
def test_bool_float_and_tensor_are_rejected(name, bad):
    with pytest.raises(ValueError, match=rf"\b{name} must be "):
        CALLS[name](bad)


def test_rejections_say_what_to_pass():
    with pytest.raises(ValueError, match=r"k must be a non-negative int, got -1$"):
        dpp_greedy(torch.eye(3), k=np.int64(-1))
    with pytest.raises(ValueError, match=r"got 2\.0; pass a Python or NumPy integer$"):
        pad_segments(torch.arange(3.0), IDS, max_len=2.0)
    with pytest.raises(ValueError, match=r"int\(num_segments\): reading a tensor is a host sync"):
        group_by_segment(IDS, num_segments=torch.tensor(3))

"""The naive references keep the ops' documented contracts (they are the oracles the ops are
checked against): NaN and masked DPP items, exact int64 greedy costs, empty inputs."""

from __future__ import annotations

import math

import torch

from torchdoctor.ops import dpp_greedy, greedy_assignment, pairwise_mahalanobis
from torchdoctor.ops.reference.assignment import greedy_assignment_reference
from torchdoctor.ops.reference.dpp import dpp_greedy_reference
from torchdoctor.ops.reference.mahalanobis import pairwise_mahalanobis_loop


def test_dpp_reference_leaves_nan_and_masked_items_out_like_the_op():
    kernel = torch.tensor([[math.nan, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]],
                          dtype=torch.float64)
    assert dpp_greedy_reference(kernel, k=3)[0] == [1, 2]
    assert dpp_greedy(kernel, k=3).indices.tolist()[:2] == [1, 2]
    kernel = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    kernel[1, :] = math.nan
    kernel[:, 1] = math.nan
    mask = torch.tensor([True, False, True])
    assert dpp_greedy_reference(kernel, k=3, mask=mask)[0] == [0, 2]
    assert dpp_greedy(kernel, k=3, mask=mask).indices.tolist()[:2] == [0, 2]


def test_greedy_reference_is_exact_for_int64_costs_past_two_to_the_53():
    cost = torch.tensor([[2**62 + 1, 2**62], [2**62, 2**62 + 5]])
    assert greedy_assignment_reference(cost)[0].tolist() == [1, 0]
    assert greedy_assignment(cost).columns.tolist() == [1, 0]


def test_pairwise_mahalanobis_loop_takes_an_empty_side():
    x, y, cov = torch.zeros(0, 2), torch.zeros(3, 2), torch.eye(2)
    assert pairwise_mahalanobis_loop(x, y, cov).shape == (0, 3)
    assert pairwise_mahalanobis(x, y, cov=cov).shape == (0, 3)

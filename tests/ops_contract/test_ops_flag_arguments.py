"""Boolean arguments must be bools: ``maximize="False"`` maximized and ``check=None`` skipped the
checks, read by truthiness (oracle round 8). A bool, a NumPy bool or 0/1 is accepted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchdoctor.ops as ops

COST = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
X = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
I3 = torch.eye(3)
IDS = torch.tensor([0, 0, 1, 1, 2])

CALLS = {
    "linear_assignment: maximize": lambda flag: ops.linear_assignment(COST, maximize=flag),
    "linear_assignment: check": lambda flag: ops.linear_assignment(COST, check=flag),
    "greedy_assignment: maximize": lambda flag: ops.greedy_assignment(COST, maximize=flag),
    "sinkhorn: check": lambda flag: ops.sinkhorn(COST, check=flag),
    "unbiased": lambda flag: ops.covariance(X, unbiased=flag),
    "check (covariance)": lambda flag: ops.covariance(X, check=flag),
    "bias_correction": lambda flag: ops.CovarianceEMA(bias_correction=flag)(I3),
    "check (cholesky_factor)": lambda flag: ops.cholesky_factor(I3, check=flag),
    "check (pairwise_mahalanobis)": lambda flag: ops.pairwise_mahalanobis(X, X, cov=I3, check=flag),
    "check (mahalanobis_to_candidates)": lambda flag: ops.mahalanobis_to_candidates(
        X[0], X, I3, check=flag
    ),
    "check (spd_distance)": lambda flag: ops.spd_distance(I3, 2 * I3, "stein", check=flag),
    "check (exhaustive_negatives)": lambda flag: ops.exhaustive_negatives(
        X, X, X, IDS, IDS, I3, check=flag
    ),
    "check (two_stage_negatives)": lambda flag: ops.two_stage_negatives(
        X, X, X, IDS, IDS, I3, top_m=2, check=flag
    ),
    "dpp_greedy: check": lambda flag: ops.dpp_greedy(I3, k=2, check=flag),
}


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("flag", ["False", None, torch.tensor(True), 2])
def test_a_flag_that_is_no_bool_is_a_type_error_naming_it(name, flag):
    argument = name.split(" (")[0]
    with pytest.raises(TypeError, match=f"^{argument} must be True or False, got "):
        CALLS[name](flag)


@pytest.mark.parametrize("name", list(CALLS))
def test_numpy_bools_and_0_1_read_as_bools(name):
    for flag in (False, True):
        expected = CALLS[name](flag)
        for same in (np.bool_(flag), int(flag)):
            got = CALLS[name](same)
            flat = lambda out: out if isinstance(out, tuple) else (out,)  # noqa: E731
            for a, b in zip(flat(got), flat(expected)):
                torch.testing.assert_close(a, b, equal_nan=True)


def test_maximize_false_as_a_string_no_longer_maximizes():
    with pytest.raises(TypeError, match="the string 'False' is true"):
        ops.linear_assignment(COST, maximize="False")
    assert ops.linear_assignment(COST, maximize=False).columns.tolist() == [1, 0]

"""The not-SPD error describes the matrix the Cholesky factorization read: its lower triangle
(oracle round 8: a non-symmetric float64 matrix whose lower triangle is indefinite was called
SPD but "ill-conditioned (condition number ~5)" for float64, from the eigenvalues of
(M + M^T) / 2, and told to add jitter)."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.ops import cholesky_factor, pairwise_mahalanobis

LOWER_INDEFINITE = torch.tensor(
    [[2.0, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]], dtype=torch.float64
)  # (M + M^T) / 2 has eigenvalues >= 0.5; the lower triangle read has -0.303


@pytest.mark.parametrize(
    "call",
    [
        lambda m: cholesky_factor(m),
        lambda m: pairwise_mahalanobis(
            torch.zeros(1, 4, dtype=m.dtype), torch.ones(1, 4, dtype=m.dtype), cov=m
        ),
    ],
)
def test_a_non_symmetric_matrix_is_described_by_its_lower_triangle(call):
    with pytest.raises(ValueError) as error:
        call(LOWER_INDEFINITE)
    message = str(error.value)
    assert "ill-conditioned" not in message
    assert "cov is not symmetric positive definite (the single matrix): smallest eigenvalue " \
        "-3.028e-01" in message
    assert "only its lower triangle is read, and it is not symmetric (largest |cov - cov^T| " \
        "1.000e+00)" in message


def test_a_symmetric_matrix_gets_no_symmetry_remark():
    with pytest.raises(ValueError) as error:
        cholesky_factor(-torch.eye(3, dtype=torch.float64))
    assert "smallest eigenvalue -1.000e+00" in str(error.value)
    assert "lower triangle" not in str(error.value)

"""Fast, batched, sync-free building blocks (the "cure"), each with a naive reference.

Naive references (the "before" of each seed) live in ``torchdoctor.ops.reference``.

Two ops are sequential by nature (exact assignment, greedy DPP selection). On CPU tensors
they run that part through a host engine on the tensors' own memory, where a step costs
microseconds instead of torch's per-op launch overhead: ``linear_assignment`` delegates to
scipy, ``dpp_greedy`` and ``select_tokens_per_segment`` step in a loop compiled by numba when it
is installed (``pip install "torchdoctor[fast]"``), else as NumPy calls. On an accelerator they
run as tensor ops with no host sync; ``method="torch"`` / ``backend="torch"`` forces that path
anywhere (it is tested to give the same result). Scalar hyperparameters (``eps``, ``margin``,
``shrinkage``, ``jitter`` ...) are read on the host: give Python numbers, since a 0-dim tensor
on an accelerator costs one host sync per call.

Example:
    >>> import torch
    >>> from torchdoctor.ops import remap_labels
    >>> remap_labels(torch.tensor([7, 3, 7]))[0].tolist()
    [1, 0, 1]
"""

from torchdoctor.ops.assignment import Assignment, greedy_assignment, linear_assignment
from torchdoctor.ops.covariance import CovarianceEMA, covariance
from torchdoctor.ops.dpp import DppSelection, dpp_greedy
from torchdoctor.ops.graphs import edge_softmax
from torchdoctor.ops.labels import remap_labels
from torchdoctor.ops.mahalanobis import (
    cholesky_factor,
    mahalanobis_to_candidates,
    pairwise_mahalanobis,
    whiten,
)
from torchdoctor.ops.mining import MinedNegatives, exhaustive_negatives, two_stage_negatives
from torchdoctor.ops.segments import group_by_segment, pad_segments
from torchdoctor.ops.sinkhorn import SinkhornResult, plan_to_assignment, sinkhorn
from torchdoctor.ops.spd import SPD_METRICS, spd_distance, spd_log
from torchdoctor.ops.tokens import select_tokens_per_segment

__all__ = [
    "cholesky_factor",
    "whiten",
    "pairwise_mahalanobis",
    "mahalanobis_to_candidates",
    "MinedNegatives",
    "two_stage_negatives",
    "exhaustive_negatives",
    "remap_labels",
    "group_by_segment",
    "pad_segments",
    "covariance",
    "CovarianceEMA",
    "spd_distance",
    "spd_log",
    "SPD_METRICS",
    "Assignment",
    "linear_assignment",
    "greedy_assignment",
    "SinkhornResult",
    "sinkhorn",
    "plan_to_assignment",
    "DppSelection",
    "dpp_greedy",
    "select_tokens_per_segment",
    "edge_softmax",
]

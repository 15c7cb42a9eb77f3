"""The one table of ``torchdoctor.ops`` replacements by name, and the leaf module types the
advice tells apart (one home: the dominant-module remedies and the tests read them here).

Example:
    >>> ops_for("pairwise_mahalanobis")[:1]
    ['torchdoctor.ops.cholesky_factor']
"""

from __future__ import annotations

import re

#: name pattern -> the torchdoctor.ops calls that replace that kind of code. A module or region
#: whose name or type matches one of these is "linear algebra or matching" (one table: the
#: linalg test and the suggested ops cannot drift apart).
OPS_FOR: tuple[tuple[re.Pattern[str], list[str]], ...] = (
    (
        re.compile(r"chol|inverse|\binv\b|pinv|mahalanobis|whiten|solve|linalg", re.IGNORECASE),
        [
            "torchdoctor.ops.cholesky_factor",
            "torchdoctor.ops.whiten",
            "torchdoctor.ops.pairwise_mahalanobis",
        ],
    ),
    (
        # (eig, spd and svd as words or name parts, not inside one: a source line's
        # `word_weights = ...` is no eigendecomposition)
        re.compile(r"covariance|\bcov|logdet|(?<![a-z])spd|(?<![a-z])svd"
                   r"|(?<![a-z])eig(?:h|vals|valsh|en[a-z]*)?(?![a-z])", re.IGNORECASE),
        ["torchdoctor.ops.covariance", "torchdoctor.ops.spd_distance"],
    ),
    (
        re.compile(r"hungarian|assignment|matching|matcher|sinkhorn", re.IGNORECASE),
        ["torchdoctor.ops.linear_assignment", "torchdoctor.ops.sinkhorn"],
    ),
    (
        re.compile(r"dpp", re.IGNORECASE),
        ["torchdoctor.ops.dpp_greedy", "torchdoctor.ops.select_tokens_per_segment"],
    ),
    (
        re.compile(r"negative|mining|cdist|distance", re.IGNORECASE),
        ["torchdoctor.ops.two_stage_negatives", "torchdoctor.ops.pairwise_mahalanobis"],
    ),
)

#: leaf module types that are one matmul (GPT-2's ``Conv1D`` is a linear layer with a weight)
MATMUL_TYPES = frozenset(
    {"Linear", "LazyLinear", "Bilinear", "Conv1D", "NonDynamicallyQuantizableLinear"}
)
EMBEDDING_TYPES = frozenset({"Embedding", "EmbeddingBag"})
RNN_CELL_TYPES = frozenset({"LSTMCell", "GRUCell", "RNNCell"})
RNN_TYPES = frozenset({"LSTM", "GRU", "RNN"})  # the whole sequence in one native kernel
CONV_TYPES = frozenset(
    {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
     "LazyConv2d", "LazyConv3d"}
)  # fmt: skip


def ops_for(name: str) -> list[str]:
    """The torchdoctor.ops calls suggested for a module/region name (empty when none fits).

    Example:
        >>> ops_for("hungarian_matching")
        ['torchdoctor.ops.linear_assignment', 'torchdoctor.ops.sinkhorn']
    """
    found: list[str] = []
    for pattern, ops in OPS_FOR:
        if pattern.search(name):
            found.extend(op for op in ops if op not in found)
    return found

"""The cure of a full sort read only up to ``k`` (lint TD512): ``torch.topk`` selects the ``k``.

A measured line that sorts a whole dimension and keeps its first ``k`` (PointNet++'s ball
query, ``group_idx.sort(dim=-1)[0][:, :, :nsample]``) gets a saving from the suite's pair
(``torchdoctor bench fused``, forward + backward of the values, ``k`` = 16, on a CPU): 4.6x on
64 x 1,000 scores, 32x on 8 x 50,257 logits. Measured on the ball query (8 clouds, 32 of 512
and 64 of 512 points): 112 -> 38 ms a step, 74 ms saved where 79 ms was stated.

Example:
    >>> TOPK.speedup.low, TOPK.references[0]
    (4.6, 'TD512')
"""

from __future__ import annotations

from torchdoctor.analyze.advice.base import Speedup
from torchdoctor.analyze.advice.cure import Cure

TOPK = Cure(
    "topk",
    "select the k with torch.topk instead of sorting every element",
    "Call torch.topk(x, k, dim=...) where the line sorts a whole dimension and reads its first "
    "k (largest=False for the k smallest, as an ascending sort's first k): it selects them "
    "without ordering the rest and returns them sorted, values and indices (tied elements may "
    "come in another order than sort's).",
    Speedup(
        4.6,
        31.7,
        "BENCHMARKS.md suite 'fused' (CPU, forward + backward of the values): sort then the "
        "first 16 vs topk, 4.60x on 64 x 1,000 scores to 31.7x on 8 x 50,257 logits",
    ),
    ("TD512", "torch.topk"),
    "idx = x.sort(dim=-1)[0][:, :, :k]                  # before: sorts every element\n"
    "idx = x.topk(k, dim=-1, largest=False)[0]          # after: selects the k smallest",
)

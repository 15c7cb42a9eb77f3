"""``scaled_dot_product_attention`` with attention dropout against without, forward and
backward (the dropout advice's figure for a Hugging Face model whose attention dropout runs
inside SDPA: ``config.attention_probs_dropout_prob``, no Dropout module in the tree).

On a CPU, SDPA's fused kernel does not take dropout: ``dropout_p > 0`` in training sends it to
the math path (scores materialized, a mask drawn). The shapes are a small BERT's attention
(batch 8, 4 heads, 128 tokens, head size 32) and a base one's (8, 12, 128, 64). The outputs
differ by the random mask, so they are not compared.

Example:
    >>> [row[0] for row in run(quick=True)[0].rows]
    ['SDPA, dropout_p=0.1 vs 0: (8, 4, 128, 32)']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchdoctor.measure import BenchTable, compare

SHAPES = ((8, 4, 128, 32), (8, 12, 128, 64))


def attention(p: float):
    """SDPA of q, k, v (the same tensor: self-attention) with dropout ``p``.

    Example:
        >>> q = torch.randn(1, 1, 4, 8)
        >>> attention(0.0)(q).shape
        torch.Size([1, 1, 4, 8])
    """

    def attend(q: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, q, q, dropout_p=p)

    return attend


def run(quick: bool = False) -> list[BenchTable]:
    """Dropout 0.1 against 0 per shape, forward + backward, interleaved.

    Example:
        >>> run(quick=True)[0].rows[0][-1]
        'not checked'
    """
    torch.manual_seed(0)
    table = BenchTable(
        "scaled_dot_product_attention with dropout_p=0.1 vs 0, forward + backward "
        "(interleaved, median of per-pair ratios)",
        ["case", "dropout ms", "no dropout ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    for shape in SHAPES[:1] if quick else SHAPES:
        q = torch.randn(*shape, requires_grad=True)
        result = compare(attention(0.1), attention(0.0), q, repeats=3 if quick else 30,
                         grads=True, check=False, names=("dropout", "no dropout"))  # fmt: skip
        table.add_row(f"SDPA, dropout_p=0.1 vs 0: {shape}", *result.row())
    table.notes.append(
        "outputs not compared (a random mask); "
        f"{torch.get_num_threads()} intra-op thread(s), CPU, torch {torch.__version__}"
    )
    return [table]

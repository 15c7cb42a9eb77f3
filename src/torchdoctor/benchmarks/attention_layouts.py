"""Hand-written attention without a mask against ``F.scaled_dot_product_attention`` (lint
TD507's cure), in SDPA's own layout and in a channels-first one.

The causal pair of ``fused_kernels`` (minGPT's masked attention, 1.42x-1.97x on a CPU) is not
what every TD507 finding is: an encoder's or a U-Net's attention has no mask, where SDPA's CPU
kernel gains less; and a U-Net's legacy attention (torchcfm's, guided-diffusion's
``QKVAttentionLegacy``) keeps q, k and v as ``(batch x heads, channels, tokens)`` and multiplies
``einsum("bct,bcs->bts", q, k)``: SDPA takes ``(..., tokens, channels)``, so the cure as written
adds a transpose of each input and of the output (clients round 15: torchcfm's attention
0.88x-0.94x under SDPA, its step 0.99x, where TD507 had told 27.6 ms saved). Each pair runs
forward + backward of the summed output on the same inputs, interleaved; outputs and input
gradients compared.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from torchdoctor.measure import BenchTable, compare


def unmasked_by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q @ k^T / sqrt(d)) @ v, no mask: an encoder's attention written out.

    Example:
        >>> q = torch.randn(1, 2, 4, 8)
        >>> torch.allclose(unmasked_by_hand(q, q, q), unmasked_fused(q, q, q), atol=1e-6)
        True
    """
    weights = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


def unmasked_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same with ``F.scaled_dot_product_attention`` (SDPA's own layout: tokens, channels).

    Example:
        >>> unmasked_fused(*(torch.zeros(1, 1, 2, 4) for _ in range(3))).shape
        torch.Size([1, 1, 2, 4])
    """
    return F.scaled_dot_product_attention(q, k, v)


def channels_first_by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A U-Net's legacy attention over ``(batch x heads, channels, tokens)`` (torchcfm's and
    guided-diffusion's ``QKVAttentionLegacy``: the scale split over q and k, einsum products).

    Example:
        >>> q = torch.randn(2, 8, 5)
        >>> torch.allclose(channels_first_by_hand(q, q, q), channels_first_fused(q, q, q), atol=1e-5)
        True
    """
    scale = 1 / math.sqrt(math.sqrt(q.shape[1]))
    weights = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    return torch.einsum("bts,bcs->bct", weights, v)


def channels_first_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same with SDPA, as TD507's fix reads there: each input transposed to ``(..., tokens,
    channels)`` and the output back.

    Example:
        >>> channels_first_fused(*(torch.zeros(2, 8, 5) for _ in range(3))).shape
        torch.Size([2, 8, 5])
    """
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


#: (case, by hand, fused, input shapes (small, large))
CASES = (
    ("unmasked attention, SDPA's layout (batch, heads, tokens, channels)", unmasked_by_hand,
     unmasked_fused, ((32, 2, 256, 64), (8, 12, 256, 64))),
    ("unmasked attention, channels first (batch x heads, channels, tokens), SDPA with "
     "transposes", channels_first_by_hand, channels_first_fused, ((64, 64, 256), (16, 64, 1024))),
)  # fmt: skip


def run(quick: bool = False) -> list[BenchTable]:
    """Each hand-written form against SDPA, forward and backward.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.columns[:3], len(table.rows)
        (['case', 'by hand ms', 'SDPA ms'], 2)
    """
    torch.manual_seed(0)
    repeats = 3 if quick else 15
    table = BenchTable(
        "hand-written attention without a mask vs F.scaled_dot_product_attention (forward + "
        "backward, interleaved, median of per-pair ratios)",
        ["case", "by hand ms", "SDPA ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    for name, by_hand, fused, shapes in CASES:
        for shape in ((tuple(s // 4 if i == 0 else s for i, s in enumerate(shapes[0])),)
                      if quick else shapes):  # fmt: skip
            inputs = [torch.randn(*shape, requires_grad=True) for _ in range(3)]
            result = compare(by_hand, fused, *inputs, repeats=repeats, grads=True, rtol=1e-4,
                             atol=1e-4, names=("by hand", "SDPA"))  # fmt: skip
            table.add_row(f"{name} {tuple(shape)}", *result.row())
    table.notes.append(
        "speedup = hand-written time / SDPA time, per interleaved pair; each timed call is the "
        "forward and the backward of the summed output; outputs and input gradients compared; "
        f"{torch.get_num_threads()} intra-op thread(s), CPU, torch {torch.__version__}"
    )
    return [table]


if __name__ == "__main__":  # python -m torchdoctor.benchmarks.<name> [--quick]
    import sys

    for result_table in run(quick="--quick" in sys.argv):
        print(result_table.to_markdown())

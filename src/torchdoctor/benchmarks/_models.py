"""Models shared by the benchmark suites (one definition, so their figures are comparable)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def transformer_train_step(quick: bool) -> tuple[nn.Module, Callable[[], torch.Tensor], str]:
    """The issues' reference step: nn.Transformer with 6 encoder + 6 decoder layers (width 256,
    batch 8, seq 64), forward + backward + AdamW; tiny sizes when ``quick``.

    Returns ``(model, step, label)``; ``step()`` returns the detached loss.

    Example:
        >>> model, step, label = transformer_train_step(quick=True)
        >>> bool(step() >= 0), label.startswith("4-layer")
        (True, True)
    """
    torch.manual_seed(0)
    width, layers, ffn, batch, seq = (32, 2, 64, 2, 8) if quick else (256, 6, 1024, 8, 64)
    model = nn.Transformer(
        d_model=width, nhead=8 if width >= 64 else 4, num_encoder_layers=layers,
        num_decoder_layers=layers, dim_feedforward=ffn, dropout=0.1, batch_first=True,
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    src, tgt = torch.randn(batch, seq, width), torch.randn(batch, seq, width)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = model(src, tgt).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    label = f"{2 * layers}-layer transformer (width {width}, batch {batch}, seq {seq})"
    return model, step, label

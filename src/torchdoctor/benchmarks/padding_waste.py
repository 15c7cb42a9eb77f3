"""Padding in token batches: one epoch of a small text encoder's training, its sequences
padded three ways (the padding advice's figure: how much of the padding's share of the
positions a remedy turns into saved time).

- ``fixed``: every batch padded to the dataset's longest sequence (``padding="max_length"``);
- ``per batch``: each batch padded to its own longest (dynamic padding, ``DataCollatorWithPadding``);
- ``grouped``: sequences sorted by length into batches, each padded to its longest
  (``group_by_length=True``; the batch order shuffled).

The model is a post-norm Transformer encoder (embedding, ``nn.TransformerEncoder`` with
``src_key_padding_mask``, mean over real tokens, a linear head), trained with AdamW. The same
sequences make each epoch; the losses differ by what each batch holds, so they are not
compared. Each row gives the positions' padding share and the epoch time; "recovered" is the
time saved over ``fixed`` divided by the positions saved over ``fixed`` (1.0: time falls as the
positions do; below 1: per-batch costs that do not shrink; "-" where under 10% of the positions
were saved, a ratio of noise).

Example:
    >>> [row[0] for row in run(quick=True)[0].rows]
    ['fixed', 'per batch', 'grouped']
"""

from __future__ import annotations

import random
import statistics
import time

import torch
from torch import nn

from torchdoctor.measure import BenchTable

#: (label, width, layers, batch, longest, shortest, sequences)
CASES = (
    ("width 128, 2 layers, batch 16, lengths 10-64 uniform", 128, 2, 16, 64, 10, 256),
    ("width 256, 4 layers, batch 32, lengths 16-256 long-tailed", 256, 4, 32, 256, 16, 128),
)
VOCAB = 1000


class Encoder(nn.Module):
    """A small text classifier over padded token batches.

    Example:
        >>> net = Encoder(32, 1)
        >>> ids, pad = torch.ones(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.bool)
        >>> net(ids, pad).shape
        torch.Size([2, 2])
    """

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 2)

    def forward(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(ids), src_key_padding_mask=pad)
        real = (~pad).unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * real).sum(1) / real.sum(1))


def lengths_of(count: int, shortest: int, longest: int, tailed: bool, seed: int = 0) -> list[int]:
    """Sequence lengths: uniform, or long-tailed (most short, a few near ``longest``).

    Example:
        >>> ls = lengths_of(100, 10, 64, False)
        >>> min(ls) >= 10 and max(ls) <= 64
        True
    """
    rng = random.Random(seed)
    if not tailed:
        return [rng.randint(shortest, longest) for _ in range(count)]
    return [min(longest, max(shortest, int(rng.lognormvariate(4.0, 0.6)))) for _ in range(count)]


def batches(lengths: list[int], batch: int, how: str, longest: int, seed: int = 0) -> list:
    """``(ids, pad mask)`` batches of the sequences of ``lengths``, padded ``how``.

    Example:
        >>> [b[0].shape[1] for b in batches([3, 5, 2, 4], 2, "per batch", 8)]
        [5, 4]
        >>> sorted(b[0].shape[1] for b in batches([3, 5, 2, 4], 2, "grouped", 8))
        [3, 5]
    """
    order = list(range(len(lengths)))
    groups = [order[i : i + batch] for i in range(0, len(order), batch)]
    if how == "grouped":
        order.sort(key=lambda i: lengths[i])
        groups = [order[i : i + batch] for i in range(0, len(order), batch)]
        random.Random(seed).shuffle(groups)  # (group_by_length shuffles the groups)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for group in groups:
        width = longest if how == "fixed" else max(lengths[i] for i in group)
        ids = torch.randint(1, VOCAB, (len(group), width), generator=gen)
        pad = torch.ones(len(group), width, dtype=torch.bool)
        for row, i in enumerate(group):
            pad[row, : lengths[i]] = False
        out.append((ids.masked_fill(pad, 0), pad))
    return out


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, data: list) -> float:
    labels = [torch.randint(0, 2, (ids.shape[0],)) for ids, _ in data]
    began = time.perf_counter()
    for (ids, pad), y in zip(data, labels):
        loss = nn.functional.cross_entropy(model(ids, pad), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - began


def run(quick: bool = False) -> list[BenchTable]:
    """Per case, one epoch under each padding, interleaved rounds.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.rows[0][-1]  # fixed is the reference
        '-'
    """
    tables = []
    for label, width, layers, batch, longest, shortest, count in CASES[:1] if quick else CASES:
        torch.manual_seed(0)
        if quick:
            width, layers, count = 32, 1, 64
        model = Encoder(width, layers)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        lengths = lengths_of(count, shortest, longest, tailed="tailed" in label)
        hows = ("fixed", "per batch", "grouped")
        data = {how: batches(lengths, batch, how, longest) for how in hows}
        positions = {how: sum(ids.numel() for ids, _ in data[how]) for how in hows}
        real = sum(lengths)
        _epoch(model, opt, data["fixed"])  # (warm-up)
        times: dict[str, list[float]] = {how: [] for how in hows}
        rounds = 2 if quick else 7
        for r in range(rounds):
            for how in hows[r % 3 :] + hows[: r % 3]:
                times[how].append(_epoch(model, opt, data[how]))
        table = BenchTable(
            f"Padding of token batches, one training epoch ({len(lengths)} sequences): {label}",
            ["padding", "positions", "padding share", "epoch ms", "x fixed", "saved",
             "recovered"],
        )  # fmt: skip
        base = times["fixed"]
        for how in hows:
            ratio = statistics.median(t / b for t, b in zip(times[how], base))
            saved_positions = 1 - positions[how] / positions["fixed"]
            table.add_row(
                how, positions[how], f"{1 - real / positions[how]:.0%}",
                1e3 * statistics.median(times[how]), round(ratio, 3),
                f"{1 - ratio:.0%}" if how != "fixed" else "-",
                round((1 - ratio) / saved_positions, 2) if saved_positions >= 0.1 else "-",
            )  # fmt: skip
        table.notes.append(
            f"{rounds} interleaved rounds, median of per-round ratios to 'fixed'; "
            f"{torch.get_num_threads()} intra-op thread(s), CPU, torch {torch.__version__}"
        )
        tables.append(table)
    return tables

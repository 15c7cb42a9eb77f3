"""A nanoGPT-shaped GPT for the overhead benchmarks (nanoGPT's model.py is the reference shape).

Token and position embeddings, blocks of LayerNorm + causal self-attention
(``F.scaled_dot_product_attention``) + LayerNorm + MLP (GELU), a final LayerNorm and a head
tied to the token embedding. Written here (not imported) so the benchmark needs nothing else.

Sizes: ``small`` (2 layers, width 64, batch 4, block 64: a few milliseconds per CPU step, the
op sizes a real GPU step has) and ``medium`` (6 layers, width 256).

Example:
    >>> model, step, label = gpt_train_step("tiny")
    >>> bool(step() > 0), label.startswith("GPT")
    (True, True)
"""

from __future__ import annotations

import atexit
import importlib.util
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of :class:`GPT` (nanoGPT's names).

    Example:
        >>> GPTConfig().n_layer
        2
    """

    vocab_size: int = 256
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused qkv projection.

    Example:
        >>> CausalSelfAttention(GPTConfig())(torch.zeros(1, 3, 64)).shape
        torch.Size([1, 3, 64])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, channels = x.shape
        q, k, v = self.c_attn(x).split(channels, dim=2)
        shape = (batch, time, self.n_head, channels // self.n_head)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(batch, time, channels))


class MLP(nn.Module):
    """Linear 4x, GELU, Linear back.

    Example:
        >>> MLP(GPTConfig())(torch.zeros(2, 64)).shape
        torch.Size([2, 64])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)).

    Example:
        >>> Block(GPTConfig())(torch.zeros(1, 2, 64)).shape
        torch.Size([1, 2, 64])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's GPT: embeddings, blocks, final LayerNorm, tied language-model head.

    Example:
        >>> model = GPT(GPTConfig())
        >>> logits, loss = model(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))
        >>> logits.shape, bool(loss > 0)
        (torch.Size([1, 5, 256]), True)
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),
                "wpe": nn.Embedding(config.block_size, config.n_embd),
                "drop": nn.Dropout(config.dropout),
                "h": nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                "ln_f": nn.LayerNorm(config.n_embd),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        positions = torch.arange(idx.shape[1], device=idx.device)
        t = self.transformer
        x = t.drop(t.wte(idx) + t.wpe(positions))
        for block in t.h:
            x = block(x)
        logits = self.lm_head(t.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


SIZES = {
    "tiny": (GPTConfig(block_size=16, n_layer=1, n_embd=32), 2),
    "small": (GPTConfig(), 4),
    "medium": (GPTConfig(n_layer=6, n_head=8, n_embd=256), 4),
}


_user_copy: list[ModuleType] = []


def user_code_module() -> ModuleType:
    """This file loaded again from a copy outside torchdoctor's package (``model.py`` in a
    temporary folder removed at exit), so the profiler sees its modules and lines as a user's
    (inside the package they are library code: their calls are not timed as hot lines).

    Example:
        >>> module = user_code_module()
        >>> module.GPT is not GPT, "torchdoctor" in module.__file__
        (True, False)
    """
    if not _user_copy:
        folder = tempfile.mkdtemp(prefix="gpt-user-code-")
        atexit.register(shutil.rmtree, folder, True)
        path = Path(folder) / "model.py"
        shutil.copyfile(__file__, path)
        spec = importlib.util.spec_from_file_location("gpt_user_model", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpt_user_model"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        _user_copy.append(module)
    return _user_copy[0]


def gpt_train_step(
    size: str = "small", user_code: bool = False, device: str = "cpu"
) -> tuple[GPT, Callable[[], torch.Tensor], str]:
    """``(model, step, label)``: one AdamW training step of the GPT on a fixed synthetic batch;
    ``user_code``: the model and the step written in a user's file (:func:`user_code_module`),
    as in a real script, where the hot-lines collector times their torch calls; ``device``:
    where the model, the batch and the optimizer state live (``"cuda"`` on a GPU machine).

    Example:
        >>> model, step, label = gpt_train_step("tiny")
        >>> label
        'GPT 1 layers, width 32, batch 2, block 16'
        >>> gpt_train_step("tiny", user_code=True)[2]
        'GPT 1 layers, width 32, batch 2, block 16 (user code)'
    """
    if user_code:
        model, step, label = user_code_module().gpt_train_step(size, device=device)
        return model, step, label + " (user code)"
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    config, batch = SIZES[size]
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, config.vocab_size, (batch, config.block_size), device=device)
    targets = torch.roll(idx, -1, dims=1)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(idx, targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    label = (
        f"GPT {config.n_layer} layers, width {config.n_embd}, batch {batch}, "
        f"block {config.block_size}" + ("" if device == "cpu" else f", on {device}")
    )
    return model, step, label

"""Seed 001's DiT-style trajectory planner (TransformerForDiffusion shape), small by default.

``TrajectoryDenoiser.forward(trajectory, t, vl_tokens, reasoning_tokens, ego_status)`` predicts
the noise. The condition encoder (:class:`ConditionEncoder`: VL-token projection + pooling,
reasoning-token projection + pooling, ego-status MLP, transformer encoder) depends only on the
conditions; the timestep enters on the decoder side. So a sampler may call
``encode(...)`` once and ``decode(...)`` per denoising step, with identical results.

Example:
    >>> m = TrajectoryDenoiser(PlannerSize(n_emb=16, n_head=2, n_layer=1, n_encoder_layer=1,
    ...     vl_tokens=8, vl_dim=8, vl_pooled=2, reasoning_tokens=4, reasoning_dim=8,
    ...     reasoning_pooled=2, ego_dim=3, horizon=4, action_dim=2))
    >>> x = torch.randn(2, 4, 2)
    >>> conds = (torch.randn(2, 8, 8), torch.randn(2, 4, 8), torch.randn(2, 3))
    >>> m(x, torch.tensor([5, 5]), *conds).shape
    torch.Size([2, 4, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PlannerSize:
    """Sizes of the planner; the seed's are n_emb 768, n_head 12, n_layer 12.

    Example:
        >>> PlannerSize().n_emb, PlannerSize(n_emb=768, n_head=12).n_head
        (128, 12)
    """

    n_emb: int = 128
    n_head: int = 4
    n_layer: int = 2
    n_encoder_layer: int = 2
    vl_tokens: int = 128
    vl_dim: int = 256
    vl_pooled: int = 16
    reasoning_tokens: int = 32
    reasoning_dim: int = 256
    reasoning_pooled: int = 8
    ego_dim: int = 8
    horizon: int = 8
    action_dim: int = 2


class Attention(nn.Module):
    """Multi-head attention; ``use_sdpa`` picks F.scaled_dot_product_attention or explicit math.

    Example:
        >>> a = Attention(8, 2)
        >>> a(torch.randn(1, 3, 8), torch.randn(1, 5, 8)).shape
        torch.Size([1, 3, 8])
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"n_emb ({dim}) must be divisible by n_head ({heads})")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.use_sdpa = False

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        if self.use_sdpa:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))
            o = scores.softmax(dim=-1) @ v
        return self.out(o.transpose(1, 2).reshape(b, n, d))


def _ffn(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class EncoderLayer(nn.Module):
    """Pre-LN transformer encoder layer (self-attention, feed-forward).

    Example:
        >>> EncoderLayer(8, 2)(torch.randn(1, 5, 8)).shape
        torch.Size([1, 5, 8])
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.ffn = _ffn(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class TokenProjectionPool(nn.Module):
    """Project tokens to n_emb, then average-pool them to a fixed number of tokens.

    Example:
        >>> TokenProjectionPool(in_dim=4, dim=8, pooled=2)(torch.randn(3, 10, 4)).shape
        torch.Size([3, 2, 8])
    """

    def __init__(self, in_dim: int, dim: int, pooled: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pool = nn.AdaptiveAvgPool1d(pooled)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pool(self.proj(tokens).transpose(1, 2)).transpose(1, 2)


class ConditionEncoder(nn.Module):
    """The encoder block: depends only on the conditions, never on the timestep.

    Returns ``(memory, vl_features)``: the encoded condition tokens and the pooled VL tokens.

    Example:
        >>> size = PlannerSize(n_emb=8, n_head=2, n_layer=1, n_encoder_layer=1, vl_tokens=6,
        ...     vl_dim=4, vl_pooled=2, reasoning_tokens=4, reasoning_dim=4, reasoning_pooled=2,
        ...     ego_dim=3, horizon=4, action_dim=2)
        >>> memory, vl = ConditionEncoder(size)(
        ...     torch.randn(1, 6, 4), torch.randn(1, 4, 4), torch.randn(1, 3))
        >>> memory.shape, vl.shape  # 1 ego + 2 VL + 2 reasoning tokens
        (torch.Size([1, 5, 8]), torch.Size([1, 2, 8]))
    """

    def __init__(self, size: PlannerSize):
        super().__init__()
        d = size.n_emb
        self.vl = TokenProjectionPool(size.vl_dim, d, size.vl_pooled)
        self.reasoning = TokenProjectionPool(size.reasoning_dim, d, size.reasoning_pooled)
        self.ego_mlp = nn.Sequential(nn.Linear(size.ego_dim, d), nn.GELU(), nn.Linear(d, d))
        tokens = 1 + size.vl_pooled + size.reasoning_pooled
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, d))
        self.layers = nn.ModuleList(
            EncoderLayer(d, size.n_head) for _ in range(size.n_encoder_layer)
        )
        self.norm = nn.LayerNorm(d)

    def forward(self, vl_tokens, reasoning_tokens, ego_status):
        vl = self.vl(vl_tokens)
        reasoning = self.reasoning(reasoning_tokens)
        ego = self.ego_mlp(ego_status).unsqueeze(1)
        x = torch.cat([ego, vl, reasoning], dim=1) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.norm(x), vl


class DecoderLayer(nn.Module):
    """Self-attention, memory-VL cross-attention, trajectory-memory cross-attention, FFN.

    Example:
        >>> layer = DecoderLayer(8, 2)
        >>> layer(torch.randn(1, 4, 8), torch.randn(1, 5, 8), torch.randn(1, 2, 8)).shape
        torch.Size([1, 4, 8])
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))
        self.self_attn = Attention(dim, heads)
        self.memory_vl_cross_attn = Attention(dim, heads)
        self.trajectory_memory_cross_attn = Attention(dim, heads)
        self.ffn = _ffn(dim)

    def forward(self, x, memory, vl_features):
        x = x + self.self_attn(self.norms[0](x))
        x = x + self.memory_vl_cross_attn(self.norms[1](x), vl_features)
        x = x + self.trajectory_memory_cross_attn(self.norms[2](x), memory)
        return x + self.ffn(self.norms[3](x))


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the diffusion timestep followed by an MLP.

    Example:
        >>> TimeEmbedding(8)(torch.tensor([0, 10, 999])).shape
        torch.Size([3, 8])
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        angles = t.float().unsqueeze(-1) * freqs
        emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class TrajectoryDenoiser(nn.Module):
    """The whole planner: ``forward`` = ``decode(..., *encode(conditions))``.

    Example:
        >>> size = PlannerSize(n_emb=8, n_head=2, n_layer=1, n_encoder_layer=1, vl_tokens=6,
        ...     vl_dim=4, vl_pooled=2, reasoning_tokens=4, reasoning_dim=4, reasoning_pooled=2,
        ...     ego_dim=3, horizon=4, action_dim=2)
        >>> model = TrajectoryDenoiser(size)
        >>> conditions = (torch.randn(1, 6, 4), torch.randn(1, 4, 4), torch.randn(1, 3))
        >>> x, t = torch.randn(1, 4, 2), torch.tensor([3])
        >>> torch.allclose(model(x, t, *conditions), model.decode(x, t, *model.encode(*conditions)))
        True
    """

    def __init__(self, size: PlannerSize):
        super().__init__()
        d = size.n_emb
        self.size = size
        self.time_embedding = TimeEmbedding(d)
        self.encoder = ConditionEncoder(size)
        self.input_embedding = nn.Linear(size.action_dim, d)
        self.position = nn.Parameter(0.02 * torch.randn(1, size.horizon, d))
        self.decoder = nn.ModuleList(DecoderLayer(d, size.n_head) for _ in range(size.n_layer))
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, size.action_dim))

    def set_attention(self, impl: str) -> None:
        """``"math"`` (explicit softmax(QK^T)V) or ``"sdpa"`` in every attention module."""
        if impl not in ("math", "sdpa"):
            raise ValueError(f"attention must be 'math' or 'sdpa', got {impl!r}")
        for module in self.modules():
            if isinstance(module, Attention):
                module.use_sdpa = impl == "sdpa"

    def encode(self, vl_tokens, reasoning_tokens, ego_status):
        return self.encoder(vl_tokens, reasoning_tokens, ego_status)

    def decode(self, trajectory, t, memory, vl_features):
        x = self.input_embedding(trajectory) + self.position
        x = x + self.time_embedding(t).unsqueeze(1)
        for layer in self.decoder:
            x = layer(x, memory, vl_features)
        return self.head(x)

    def forward(self, trajectory, t, vl_tokens, reasoning_tokens, ego_status):
        memory, vl_features = self.encode(vl_tokens, reasoning_tokens, ego_status)
        return self.decode(trajectory, t, memory, vl_features)

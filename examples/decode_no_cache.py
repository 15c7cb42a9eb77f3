"""Greedy decoding that feeds the whole sequence back at every step (no KV cache), as
nanoGPT's ``generate`` does: `torchdoctor run examples/decode_no_cache.py` measures what a
cache would save from the run's own steps (rule ``decode-without-cache``)."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)
D, HEADS, VOCAB, LAYERS = 256, 4, 1000, 4


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (
            z.view(b, t, HEADS, D // HEADS).transpose(1, 2)
            for z in self.qkv(self.ln1(x)).split(D, dim=2)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, D))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, D), nn.Embedding(512, D)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.head = nn.Linear(D, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


model = TinyGPT().eval()
idx = torch.randint(0, VOCAB, (4, 8))
with torch.no_grad():
    for _ in range(160):  # each step re-runs the model over every earlier token
        next_token = model(idx)[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, next_token], dim=1)
print("generated", tuple(idx.shape))

"""An inference-only sampler (no backward): try `torchdoctor tune examples/tune_sampler.py`.

A tiny autoregressive model samples tokens one at a time under torch.no_grad().
"""

import torch
from torch import nn

torch.manual_seed(0)
vocab, dim, length = 256, 64, 32


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.body = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens).mean(dim=1)
        return self.head(h + self.body(h))


model = TinyLM().eval()
tokens = torch.zeros(8, 1, dtype=torch.long)
with torch.no_grad():
    for _ in range(200):
        logits = model(tokens[:, -length:])
        probs = torch.softmax(logits.float(), dim=-1)
        tokens = torch.cat([tokens, torch.multinomial(probs, 1)], dim=1)
print(tokens.shape)

"""TD511 and an attribute its class binds once, in __init__, to a literal or to a parameter
whose default is one (blind corpus 36's TCN: ``self.h, self.q = horizon, quantiles`` then
``torch.tensor(self.q, device=x.device)`` in every forward)."""
import torch
import torch.nn as nn


class QuantileHead(nn.Module):
    def __init__(self, dim, horizon=24, quantiles=(0.1, 0.5, 0.9)):
        super().__init__()
        self.h, self.q = horizon, quantiles
        self.mean = [0.485, 0.456, 0.406]
        self.proj = nn.Linear(dim, horizon * len(quantiles))
        self.q_init = torch.tensor(self.q)  # (near miss: built once, in __init__)

    def forward(self, x):
        q = torch.tensor(self.q, device=x.device)  # expect: TD511
        m = torch.tensor(self.mean, device=x.device)  # expect: TD511
        return self.proj(x - m.mean()).view(-1, self.h, len(self.q)) * q


class Settable(nn.Module):
    def __init__(self, weights=(1.0, 0.5), scales=None, levels=(1, 2, 4)):
        super().__init__()
        self.weights = weights
        self.scales = scales
        levels = tuple(2 * v for v in levels)
        self.levels = levels
        self.taps = [0.25, 0.5, 0.25]

    def set_weights(self, weights):
        self.weights = weights

    def add_tap(self, v):
        self.taps.append(v)

    def forward(self, x):
        w = torch.tensor(self.weights, device=x.device)  # (near miss: rebound by set_weights)
        s = torch.tensor(self.scales, device=x.device)  # (near miss: no literal default)
        lv = torch.tensor(self.levels, device=x.device)  # (near miss: the parameter is rebound)
        t = torch.tensor(self.taps, device=x.device)  # (near miss: mutated by add_tap)
        return x * w.sum() * s.sum() * lv.sum() * t.sum()


class ContrastiveLogits(nn.Module):  # wav2vec 2.0's logit temperature (blind corpus 42)
    def __init__(self, logit_temp=0.1, max_temp=2.0, scale=None):
        super().__init__()
        self.logit_temp, self.curr_temp, self.scale = logit_temp, max_temp, scale

    def set_num_updates(self, n):
        self.curr_temp = max(self.curr_temp * 0.999995**n, 0.5)

    def forward(self, c, q):
        logits = torch.cosine_similarity(c, q, dim=-1)
        logits = logits / torch.tensor(self.logit_temp, device=logits.device)  # expect: TD511
        logits = logits / torch.tensor(self.curr_temp, device=logits.device)  # (near miss: rebound per update)
        logits = logits * torch.tensor(self.scale, device=logits.device)  # (near miss: no default)
        return logits + torch.tensor(self.logit_temp)  # (near miss: one number on the host)

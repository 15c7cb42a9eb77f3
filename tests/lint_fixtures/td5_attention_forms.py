# TD507 fixtures: the attention's form in the message (tests/lint/test_lint_attention_forms.py).
import math
import torch
import torch.nn.functional as F


def causal(self, q, k, v, T):
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
    att = F.softmax(att, dim=-1)  # expect: TD507
    return att @ v


def unmasked(q, k, v):
    att = F.softmax(q @ k.transpose(-2, -1) / 8.0, dim=-1)  # expect: TD507
    return att @ v


def legacy(qkv, H):
    bs, width, length = qkv.shape
    ch = width // (3 * H)
    q, k, v = qkv.reshape(bs * H, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)  # expect: TD507
    a = torch.einsum("bts,bcs->bct", weight, v)
    return a.reshape(bs, -1, length)


def padded(q, k, v, key_padding_mask):
    s = q @ k.transpose(-2, -1)
    s = s + key_padding_mask
    return s.softmax(-1) @ v  # expect: TD507


def not_attention(x, w):
    # a softmax over logits times a weight matrix, no q @ k^T: no finding
    return torch.softmax(x @ w, dim=-1)

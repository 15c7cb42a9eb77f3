"""TD507: attention weights returned beside the context, used or dropped by the callers."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class DotAttention(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden
        self.key_proj = nn.Linear(hidden, hidden)

    def forward(self, query, enc_out):
        keys = self.key_proj(enc_out)
        scores = torch.bmm(query.unsqueeze(1), keys.transpose(1, 2)) / math.sqrt(self.hidden)
        weights = F.softmax(scores, dim=-1)  # expect: TD507
        return torch.bmm(weights, enc_out).squeeze(1), weights.squeeze(1)


class Decoder(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.attn = DotAttention(hidden)

    def forward(self, h, enc_out):
        ctx, _ = self.attn(h, enc_out)  # (the weights are dropped: the fused kernel fits)
        return ctx


class MapAttention(nn.Module):
    def forward(self, query, keys):
        scores = torch.bmm(query.unsqueeze(1), keys.transpose(1, 2))
        weights = F.softmax(scores, dim=-1)  # near-miss: the caller plots the weights
        return torch.bmm(weights, keys).squeeze(1), weights.squeeze(1)


class Captioner(nn.Module):
    def __init__(self):
        super().__init__()
        self.attend = MapAttention()

    def forward(self, h, feats):
        ctx, alpha = self.attend(h, feats)
        return ctx, alpha


class CrossAttention(nn.Module):
    def forward(self, tgt, memory):
        B, Q, C = tgt.shape
        h, hd = self.nhead, C // self.nhead
        q = self.q_proj(tgt).view(B, Q, h, hd).transpose(1, 2)
        k = self.k_proj(memory).view(B, -1, h, hd).transpose(1, 2)
        v = self.v_proj(memory).view(B, -1, h, hd).transpose(1, 2)
        weights = torch.matmul(q, k.transpose(-2, -1)) * hd**-0.5
        weights = weights.softmax(dim=-1)  # expect: TD507
        out = torch.matmul(self.dropout(weights), v).transpose(1, 2).reshape(B, Q, C)
        return self.out_proj(out)


def attention(query, key, value, mask=None):
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(query.size(-1))
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    p_attn = F.softmax(scores, dim=-1)  # expect: TD507
    return torch.matmul(p_attn, value), p_attn


def attention_kept(query, key, value):
    scores = torch.matmul(query, key.transpose(-2, -1))
    p_attn = F.softmax(scores, dim=-1)  # near-miss: a caller keeps the weights
    return torch.matmul(p_attn, value), p_attn


class Heads(nn.Module):
    def forward(self, q, k, v):
        x, _ = attention(q, k, v)
        y, self.attn = attention_kept(q, k, v)
        return x + y


class PositionAttention(torch.nn.Module):  # DANet's position attention module
    def forward(self, x):
        b, c, h, w = x.size()
        proj_query = self.query_conv(x).view(b, -1, w * h).permute(0, 2, 1)
        proj_key = self.key_conv(x).view(b, -1, w * h)
        energy = torch.bmm(proj_query, proj_key)
        attention = torch.softmax(energy, dim=-1)  # expect: TD507
        proj_value = self.value_conv(x).view(b, -1, w * h)
        out = torch.bmm(proj_value, attention.permute(0, 2, 1))
        return self.gamma * out.view(b, c, h, w) + x

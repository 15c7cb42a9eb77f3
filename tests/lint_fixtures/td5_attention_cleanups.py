"""TD507 through an elementwise clean-up of the weights between the softmax and the product
(SASRec zeroes the NaN rows of fully masked queries; padding masked out after the softmax)."""
import torch


def causal_attention(q, k, v, pad):
    att = (q @ k.transpose(-2, -1)) / 8.0
    att = att.masked_fill(pad, float("-inf"))
    return att.softmax(-1).nan_to_num(0.0) @ v  # expect: TD507


def padded_attention(q, k, v, keep):
    att = torch.softmax(q @ k.transpose(-2, -1) / 8.0, dim=-1).masked_fill(~keep, 0.0)  # expect: TD507
    return att @ v


def named_cleanup(q, k, v):
    att = torch.softmax(q @ k.transpose(-2, -1) / 8.0, dim=-1)  # expect: TD507
    att = att.nan_to_num(0.0)
    return att @ v


def attention_map(q, k, v):
    # near miss: the cleaned weights are returned too (the fused kernel does not give them)
    att = torch.softmax(q @ k.transpose(-2, -1) / 8.0, dim=-1).nan_to_num(0.0)
    return att @ v, att


def mixture(logits, codebook):
    # near miss: a softmax over classes weighting a codebook, no q @ k^T
    return logits.softmax(-1).nan_to_num(0.0) @ codebook

# TD514 fixtures: graph attention over every pair of nodes, masked by the adjacency.
import torch
import torch.nn as nn
import torch.nn.functional as F


class GraphAttentionLayer(nn.Module):  # pytorch/examples gat/main.py
    def forward(self, h, adj_mat):
        e = self.scores(h)
        connectivity_mask = -9e16 * torch.ones_like(e)
        e = torch.where(adj_mat > 0, e, connectivity_mask)  # expect: TD514
        attention = F.softmax(e, dim=-1)
        return torch.matmul(attention, h)


class PyGATLayer(nn.Module):  # pyGAT's layer: the mask on self, the softmax over dim 1
    def forward(self, h):
        e = self.leakyrelu(self.a_input(h))
        zero_vec = -9e15 * torch.ones_like(e)
        attention = torch.where(self.adj > 0, e, zero_vec)  # expect: TD514
        attention = F.softmax(attention, dim=1)
        return attention @ h


def attend_masked_fill(scores, adjacency, values):
    scores = scores.masked_fill(adjacency == 0, float("-inf"))  # expect: TD514
    return scores.softmax(-1) @ values


def attend_in_place(scores, adj, values):
    scores.masked_fill_(~adj.bool(), -1e9)  # expect: TD514
    weights = torch.softmax(scores, dim=-1)
    return weights @ values


def attend_nested(e, adjMatrix):
    return F.softmax(torch.where(adjMatrix[0] != 0, e, -9e15), dim=-1)  # expect: TD514


def attend_through_a_mask_name(e, adj, h):
    mask = adj > 0
    e = e.masked_fill(~mask, float("-inf"))  # expect: TD514
    return torch.softmax(e, dim=-1) @ h


def causal_attention(q, k, v, mask):
    # a transformer's causal or padding mask: no adjacency, no finding (SDPA is TD507's)
    scores = q @ k.transpose(-2, -1)
    scores = scores.masked_fill(mask == 0, float("-inf"))
    return scores.softmax(-1) @ v  # expect: TD507


def gcn_layer(x, adj, weight):
    # a GCN propagates over the adjacency with no softmax: no finding
    degree = torch.where(adj > 0, 1.0, 0.0).sum(-1, keepdim=True)
    return (adj @ (x @ weight)) / degree


def masked_elsewhere(e, adj):
    # the masked scores are returned; their softmax is another function's: no finding
    return torch.where(adj > 0, e, -9e15)


def adjusted_scores(e, adjusted_mask, v):
    # "adjusted" is no adjacency: no finding
    e = e.masked_fill(adjusted_mask == 0, -1e9)
    return e.softmax(-1) @ v


def softmax_before_mask(e, adj):
    # the softmax runs first, on another tensor: no finding
    p = torch.softmax(e, dim=-1)
    q = torch.where(adj > 0, p, torch.zeros_like(p))
    return q


def multi_head_scores(s, t, adj, v):
    # a batched multi-head GAT: the adjacency broadcast over the heads
    e = F.leaky_relu(s.unsqueeze(2) + t.unsqueeze(1), 0.2)  # (B, N, N, heads)
    e = e.masked_fill(adj.unsqueeze(-1) == 0, float("-inf"))  # expect: TD514
    return torch.einsum("bijh,bjhd->bihd", torch.softmax(e, dim=2), v)


def causal_heads(scores, causal_mask, v):
    # a causal mask broadcast over the heads is no adjacency: no finding
    scores = scores.masked_fill(causal_mask.unsqueeze(1) == 0, float("-inf"))
    return scores.softmax(-1) @ v

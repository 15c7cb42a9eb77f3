"""TD304 where each item's result is summed: a per-sample loss in a loop."""
import torch
import torch.nn.functional as F


def per_sample_loss(model, x, y):
    loss = 0.0
    for i in range(x.shape[0]):  # expect: TD304
        loss = loss + F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
    return loss


def per_sample_square(x, w):
    total = torch.zeros(())
    for i in range(x.size(0)):  # expect: TD304
        total += (x[i] @ w).square().sum()
    return total


def recurrence(cell, x, h):
    for t in range(x.shape[0]):  # near-miss: the state is carried (h reads itself)
        h = h + cell(x[t], h)
    return h


def host_sum(x):
    total = 0.0
    for i in range(x.shape[0]):  # near-miss: each item read on the host
        total += x[i].sum().item()
    return total


def two_statements(model, x):
    loss = 0.0
    for i in range(x.shape[0]):  # near-miss: more than the sum in the body
        out = model(x[i])
        loss = loss + out.sum()
    return loss

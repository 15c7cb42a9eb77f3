"""TD301 in a file whose only mask is built on its own line (the rule's file trigger must see
it), and a per-class IoU's combined masks."""

import torch


def readout(gate, h, batch, num_graphs):
    pooled = []
    for g in range(num_graphs):
        sel = batch == g
        a = torch.softmax(gate[sel], dim=0)  # expect: TD301
        pooled.append((a[:, None] * h[sel]).sum(0))  # expect: TD301
    return torch.stack(pooled)


def part_ious(pred, target, num_parts):
    ious = []
    for c in range(num_parts):
        inter = ((pred == c) & (target == c)).sum()  # expect: TD301
        union = ((pred == c) | (target == c)).sum()  # expect: TD301
        ious.append(inter / union.clamp(min=1))
    return torch.stack(ious).mean()


def valid_fraction(pred, ignore_index):
    keep = (pred != ignore_index) & (pred >= 0)  # near-miss: no loop over values
    return keep.sum() / pred.numel()


def degree(index, num_nodes):
    return torch.stack([(index == n).sum() for n in range(num_nodes)]).float()  # expect: TD301

"""TD304 for a loop over range(x.size(0)) that walks the items of another parameter of the
same batch and writes each result into a tensor made before the loop."""

import torch


def perturbations(points, steps):
    out = points.new_zeros(points.size(0), 6, 4, 4)
    for b in range(points.size(0)):  # expect: TD304
        twist = torch.diag(steps[b, :])
        out[b] = torch.exp(-twist)[:4, :4]
    return out


def perturbations_batched(points, steps):
    twist = torch.diag_embed(steps)  # near-miss: one batched call
    return torch.exp(-twist)[:, :4, :4] + 0 * points.sum()


def per_frame(points, names, table):
    out = points.new_zeros(points.size(0), 3)
    for b in range(points.size(0)):
        out[b] = table[names[b]]  # near-miss: a dictionary look-up per item, no tensor op
    return out

"""TD301 in a file whose only mask compares a subscript (the rule's file trigger must see it)."""

import torch


def relation_margins(model, loader, n_rel, optimizer):
    rel_margin = torch.zeros(n_rel)
    for batch in loader:
        pos_d, neg_d = model(batch), model(batch.flip(0))
        loss = (neg_d - pos_d).clamp(min=0).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        gap = (neg_d - pos_d).detach()
        for r in range(n_rel):
            rel_margin[r] += gap[batch[:, 1] == r].sum()  # expect: TD301
    return rel_margin

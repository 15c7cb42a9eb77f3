# An optimizer built per iteration of a loop that first resets the weights it trains
# (load_state_dict of the base weights: a few steps of adaptation per group) starts fresh
# with them; the same loop without the reset keeps training one set of weights.
import torch
import torch.nn.functional as F


def adapt_per_group(model, groups, base, steps=5):
    heads = {}
    for g, (x, y) in groups.items():
        model.head.load_state_dict(base)
        opt = torch.optim.SGD(model.head.parameters(), lr=1e-3)  # near-miss: fresh weights too
        for _ in range(steps):
            loss = F.cross_entropy(model.head(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        heads[g] = {k: v.clone() for k, v in model.head.state_dict().items()}
    return heads


def adapt_in_turn(model, groups, steps=5):
    for g, (x, y) in groups.items():
        opt = torch.optim.SGD(model.head.parameters(), lr=1e-3)  # expect: TD704
        for _ in range(steps):
            loss = F.cross_entropy(model.head(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

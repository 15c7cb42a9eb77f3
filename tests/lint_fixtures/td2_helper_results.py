"""TD201 through a function of the file: a reduction of a comparison of what a helper returns
(a torch chain: ``(2 - 2 * a @ b.T).clamp(min=0).sqrt()``) is a tensor, and int() of it reads
it on the host every step (blind corpus 35's metric learning: n_active = int(active)). A
helper returning a shape, a NumPy array or itself stays a Python value."""
import numpy as np
import torch


def pairwise_dist(a, b=None):
    b = a if b is None else b
    return (2 - 2 * a @ b.T).clamp(min=0).sqrt()


def host_counts(y):
    return np.bincount(y)


def first_dim(x):
    return x.shape


def nested(x, depth):
    return nested(x, depth - 1) if depth else x


def train(model, loader, opt):
    for x, y in loader:
        x, y = x.cuda(), y.cuda()
        emb = model(x)
        loss = emb.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        active = (pairwise_dist(emb.detach()) > 0.1).sum()
        n_active = int(active)  # expect: TD201
        seen = (host_counts([1, 2, 2]) > 0).sum()
        n_seen = int(seen)  # near-miss: NumPy's counts, host data
        rows = int(first_dim(x)[0])  # near-miss: a shape
        deep = (nested(3, 2) > 0).sum()
        n_deep = int(deep)  # near-miss: a function that returns itself is not followed
        print(n_active, n_seen, rows, n_deep)

# A loss a training loop calls on the encoder's states `h`, slicing them per position (THP's
# Monte Carlo integral over each gap); the slice may add an axis (h[:, j, None, :]).
import torch


def integral(model, h, times, n_mc=20):
    total = torch.zeros(times.shape[0], device=times.device)
    for j in range(times.shape[1] - 1):
        u = torch.rand(times.shape[0], n_mc, device=times.device)
        lam = model.lam(h[:, j, None, :], u, times[:, j, None])  # expect: TD307
        total = total + lam.sum(-1).mean(-1)
    return total


def shade(h, rows):
    out = []
    for j in range(rows):
        out.append(h[:, j, None] * 2)  # near-miss: a function no training loop calls
    return out


def train(model, loader, opt):
    for times, types in loader:
        h = model(times, types)
        loss = integral(model, h, times).sum()
        for j in range(times.shape[1]):
            loss = loss + times[:, j, None].sum()  # near-miss: the batch's data
        opt.zero_grad()
        loss.backward()
        opt.step()


class Epilogue:
    # a CuTe DSL kernel's method: `t[None, m]` takes a whole mode (None) at m, not a new axis
    # of a tracked tensor sliced per step: no finding
    def copy_vector(self, tVgV, tVsV, n):
        for m in range(n):
            copy(tVgV[None, m], tVsV[None, m])

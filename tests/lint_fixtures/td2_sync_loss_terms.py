"""TD201: float() of a loss term whose name says nothing of a tensor (a reduction that the
step's backward goes through)."""
import numpy as np
import torch


def surface_gap(a, b):
    return torch.cdist(a, b).amin(-1)


def fit(model, loader, opt, schedule, priors):
    running = 0.0
    for step, (scan, target) in enumerate(loader):
        pred = model(scan)
        gap = surface_gap(pred, target).mean()
        weight = schedule(step)
        prior = np.asarray(priors).mean()
        objective = weight * gap + prior
        opt.zero_grad()
        objective.backward()
        opt.step()
        running += float(gap)  # expect: TD201 (a term of the loss the step backpropagates)
        ramp = float(weight)  # near-miss: the schedule's weight, a Python number
        base = float(prior)  # near-miss: a NumPy reduction, host data
    return running, ramp, base


def gan_step_stats(net_d, net_g, loader, opt, lr, epoch):
    for x, y in loader:
        loss_disc = net_d(x).mean()
        loss_gen = (net_g(x) - y).abs().mean()
        (loss_disc + loss_gen).backward()
        opt.step()
        stats = {k: float(v) for k, v in {"disc": loss_disc, "gen": loss_gen}.items()}  # expect: TD201
        parts = [float(t) for t in (loss_disc, loss_gen)]  # expect: TD201
        hparams = {k: float(v) for k, v in {"lr": lr, "epoch": epoch}.items()}  # near-miss: Python numbers
        print(stats, parts, hparams)

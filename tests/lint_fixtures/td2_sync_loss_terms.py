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

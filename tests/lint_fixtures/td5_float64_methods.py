"""TD505 in a method of a plain class that a CUDA training loop calls every step (a GFlowNet
environment's reward); a module's method keeps float64 for precision, a method called once is
not every step."""
import torch
import torch.nn as nn


class HyperGrid:
    def __init__(self, height):
        self.height = height

    def log_reward(self, states):
        ax = (states.double() / (self.height - 1) - 0.5).abs()  # expect: TD505
        return torch.log(0.001 + (ax > 0.25).all(-1)).float()

    def all_states(self):
        return torch.arange(self.height, dtype=torch.float64)  # near-miss: called once


class Energy(nn.Module):
    def log_prob(self, x):
        return -(x.double() ** 2).sum(-1)  # near-miss: a module's own precision choice


def train(policy, opt, sample, iters):
    env = HyperGrid(8)
    energy = Energy().cuda()
    grid = env.all_states()
    for it in range(iters):
        final, logpf = sample(policy)
        loss = (logpf - env.log_reward(final) - energy.log_prob(grid)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

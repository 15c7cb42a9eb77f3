"""TD306 across calls: a plain class's buffer grown onto itself by a method that a step loop
calls every step (a GFlowNet's replay buffer); not a module's memory bank, not a method the
loop calls under a logging gate, not one called once."""
import torch
import torch.nn as nn


class ReplayBuffer:
    def __init__(self, ndim):
        self.states = torch.empty(0, ndim)
        self.rewards = torch.empty(0)
        self.seen = torch.empty(0)

    def add(self, states, rewards):
        self.states = torch.cat([self.states, states])  # expect: TD306
        self.rewards = torch.cat((self.rewards, rewards))  # expect: TD306

    def remember(self, batch):
        self.seen = torch.cat([self.seen, batch])  # near-miss: called under a logging gate

    def sample(self, n):
        idx = torch.randint(0, self.states.shape[0], (n,))
        return self.states[idx], self.rewards[idx]


class Queue(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.register_buffer("bank", torch.zeros(0, dim))

    def push(self, keys):
        self.bank = torch.cat([self.bank, keys])  # near-miss: a module's memory bank


def train(policy, opt, sample, iters):
    buffer = ReplayBuffer(4)
    queue = Queue(4)
    for it in range(iters):
        final, log_r, loss = sample(policy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        buffer.add(final, log_r)
        queue.push(final)
        if it % 100 == 0:
            buffer.remember(final)

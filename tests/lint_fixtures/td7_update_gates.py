"""TD711 under the ``if`` that decides when an update runs, and TD708 for a loss a step
function hands back with its graph."""

import torch


def replay_training(qnet, opt, buffer, total, learn_every, warmup, path):
    for t in range(total):
        buffer.collect(qnet)
        if t > warmup and t % learn_every == 0:
            loss = qnet.td_error(buffer.sample()).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            torch.save(qnet.state_dict(), path)  # expect: TD711
        if t % 10_000 == 0:
            torch.save(qnet.state_dict(), path)  # near-miss: every 10k steps


class Runner:
    def __init__(self, net, opt):
        self.net, self.opt = net, opt

    def update(self, batch):
        loss = self.net(batch).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss

    def update_value(self, batch):
        loss = self.net(batch).mean()
        loss.backward()
        self.opt.step()
        return loss.detach()

    def epoch(self, loader):
        kept, values = [], []
        for batch in loader:
            step_loss = self.update(batch)
            kept.append(step_loss)  # expect: TD708
            value = self.update_value(batch)
            values.append(value)  # near-miss: the step function detached it
        return torch.stack(kept).mean().item(), torch.stack(values).mean().item()

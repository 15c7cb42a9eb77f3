"""A prioritized replay buffer's method reading its tensor argument on the host
(``td_errors.abs().cpu().numpy()``), called every step with a tensor the step computed under a
name no rule reads as a tensor (``per_sample = -(m * logp).sum(1)``): told at the call, as for
``loss``. A call handing it Python data is not."""
import torch


class Replay:
    def __init__(self):
        self.prios = {}

    def update_priorities(self, idxs, td_errors):
        for i, e in zip(idxs, td_errors.abs().cpu().numpy()):
            self.prios[i] = float(e)


def train(net, opt, batches, steps):
    buf = Replay()
    for _ in range(steps):
        idxs, x, m = next(batches)
        logp = net(x.cuda()).log_softmax(-1)
        per_sample = -(m * logp).sum(1)
        loss = per_sample.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        buf.update_priorities(idxs, per_sample)  # expect: TD201
        weights = [1.0 for _ in idxs]
        buf.update_priorities(idxs, weights)

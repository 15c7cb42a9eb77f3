"""TD201 / TD207 in helpers a training loop runs every step: a method the loop calls through
``self``, a function handed a mask by its caller, and a branch on a flag that is on by default."""

import torch
import torch.nn.functional as F


class ContrastiveTrainer:
    def __init__(self, net, opt, size):
        self.net, self.opt, self.size = net.cuda(), opt, size

    def pair_logits(self, emb):
        n = emb.shape[0]
        diagonal = torch.eye(n, dtype=torch.bool, device=emb.device)
        scores = emb @ emb.T
        return scores[~diagonal].view(n, n - 1)  # expect: TD207

    def fixed_logits(self, emb):
        n = emb.shape[0]
        diagonal = torch.eye(n, dtype=torch.bool, device=emb.device)
        return (emb @ emb.T).masked_fill(diagonal, -1e4)  # near-miss: fixed shape

    def summary(self, emb):
        keep = emb.norm(dim=1) > 0
        return emb[keep].mean()  # near-miss: called once after training

    def run(self, batches):
        for images in batches:
            emb = F.normalize(self.net(images.cuda()), dim=1)
            loss = self.pair_logits(emb).logsumexp(1).mean()
            loss = loss + self.fixed_logits(emb).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return self.summary(emb)


def pick_targets(patches, chosen):
    return patches[chosen].flatten(1)  # expect: TD207


def pick_rows(patches, rows):
    return patches[rows].flatten(1)  # near-miss: handed integer indices


def train_masked(model, loader, opt):
    for patches, chosen, rows in loader:
        patches = patches.cuda(non_blocking=True)
        chosen = chosen.cuda(non_blocking=True).to(torch.bool)
        with torch.no_grad():
            target = pick_targets(patches, chosen)
            other = pick_rows(patches, rows.cuda().long())
        loss = (model(patches) - target).pow(2).mean() + other.mean()
        loss.backward()
        opt.step()


def fit(model, loader, opt, scorer, verbose=1, plot=False):
    scores = []
    for x, y in loader:
        x, y = x.cuda(), y.cuda()
        logit = model(x)
        loss = F.binary_cross_entropy_with_logits(logit, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose:
            scores.append(scorer(y.cpu().numpy(), logit.detach().cpu().numpy()))  # expect: TD201
        if verbose > 1:
            print(loss.item())  # near-miss: only at a higher verbosity than the default
        if plot and verbose:
            scorer(y.cpu().numpy(), None)  # near-miss: plot is off by default
    return scores


def log_losses(step, loss):
    if step % 100:
        return
    print(f"step {step}: loss {loss.item():.4f}")  # near-miss: an early return leaves one step in 100


def train_logged(model, loader, opt):
    for step, (x, y) in enumerate(loader):
        out = model(x.cuda())
        loss = F.cross_entropy(out, y.cuda())
        opt.zero_grad()
        loss.backward()
        opt.step()
        log_losses(step, loss)

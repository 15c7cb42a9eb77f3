"""TD510 a sigmoid's output fed to binary cross-entropy."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.functional import binary_cross_entropy


def direct(x, y):
    a = F.binary_cross_entropy(torch.sigmoid(x), y)  # expect: TD510
    b = F.binary_cross_entropy(x.sigmoid(), y, reduction="sum")  # expect: TD510
    c = nn.BCELoss()(torch.sigmoid(x), y)  # expect: TD510
    d = binary_cross_entropy(F.sigmoid(x).squeeze(1), y)  # expect: TD510
    e = F.binary_cross_entropy(torch.sigmoid(x).clamp(1e-4, 1 - 1e-4), y)  # expect: TD510
    f = nn.functional.binary_cross_entropy(input=torch.special.expit(x), target=y)  # expect: TD510
    return a, b, c, d, e, f


criterion = nn.BCELoss()


def module_level_criterion(out, label):
    p = torch.sigmoid(out)
    return criterion(p, label)  # expect: TD510


def named_module(x, y):
    act = nn.Sigmoid()
    return F.binary_cross_entropy(act(x), y)  # expect: TD510


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.Sigmoid()
        self.bce = nn.BCELoss(reduction="sum")

    def forward(self, x, y):
        return self.bce(self.act(x), y)  # expect: TD510


def not_reported(x, y, probs, mask):
    ok1 = F.binary_cross_entropy_with_logits(x, y)  # near-miss: the fused loss
    ok2 = F.binary_cross_entropy(probs, y)  # near-miss: probabilities made elsewhere
    ok3 = F.binary_cross_entropy(x, torch.sigmoid(y))  # near-miss: a sigmoid target
    p = torch.sigmoid(x)
    p = p * mask  # the name no longer holds the sigmoid
    ok4 = F.binary_cross_entropy(p, y)  # near-miss: reassigned
    q = torch.sigmoid(x)
    q[mask] = 0.5
    ok5 = F.binary_cross_entropy(q, y)  # near-miss: modified in place
    ok6 = F.mse_loss(torch.sigmoid(x), y)  # near-miss: another loss
    ok7 = F.binary_cross_entropy(torch.softmax(x, -1), y)  # near-miss: not a sigmoid
    return ok1, ok2, ok3, ok4, ok5, ok6, ok7


def before_assignment(p, x, y):
    early = F.binary_cross_entropy(p, y)  # near-miss: p is a parameter here
    p = torch.sigmoid(x)
    return early, p


class Scorer(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.loss = nn.BCELoss()

    def forward(self, x, y):
        return self.loss(self.act(x), y)  # near-miss: self.act is no sigmoid


def link_loss(model, src, dst, neg):
    pos_logit, neg_logit = model(src, dst, neg)
    pos_prob, neg_prob = torch.sigmoid(pos_logit), torch.sigmoid(neg_logit)
    loss = F.binary_cross_entropy(pos_prob, torch.ones_like(pos_prob))  # expect: TD510
    return loss + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))


def train_one_epoch(model, loader, optimizer, criterion):
    for q, r in loader:
        y = model(q)
        loss = criterion(torch.sigmoid(y), r)  # expect: TD510
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def kt_main(model, loader, optimizer):
    criterion = nn.BCELoss()
    train_one_epoch(model, loader, optimizer, criterion=criterion)


def mse_epoch(model, loader, optimizer, loss_fn):
    for q, r in loader:
        loss = loss_fn(torch.sigmoid(model(q)), r)  # near-miss: the caller passes nn.MSELoss()
        loss.backward()
        optimizer.step()


def mse_main(model, loader, optimizer):
    mse_epoch(model, loader, optimizer, nn.MSELoss())


def bce_from_logits_clamped(logits, target, eps=1e-7):
    probs = torch.sigmoid(logits).clamp(eps, 1 - eps)
    return F.binary_cross_entropy(probs, target)  # expect: TD510

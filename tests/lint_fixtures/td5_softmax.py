"""TD509 the log of a softmax; a softmax fed to cross-entropy (and TD510 where it meets it)."""

import math

import numpy as np
import scipy.special
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.functional import softmax


def direct(x, y):
    a = torch.log(torch.softmax(x, 1))  # expect: TD509
    b = F.softmax(x, dim=-1).log()  # expect: TD509
    c = torch.log(F.softmax(x, -1) + 1e-8)  # expect: TD509
    d = torch.log(softmax(x, dim=1))  # expect: TD509
    e = x.softmax(-1).log()  # expect: TD509
    f = torch.log(nn.Softmax(dim=1)(x))  # expect: TD509
    g = torch.log(F.softmax(x, 1).clamp(min=1e-12))  # expect: TD509
    return a, b, c, d, e, f, g


def through_a_name(z, eps=1e-6):
    p = F.softmax(z, -1)
    logp = torch.log(p)  # expect: TD509
    logq = p.log()  # expect: TD509
    entropy = -(p * torch.log(p + eps)).sum(-1)  # expect: TD509
    return logp, logq, entropy


def nll_of_log(logits, target):
    return nn.functional.nll_loss(torch.log(softmax(logits, 1)), target)  # expect: TD509


def prob_then_log(logits, y):
    probs = logits.softmax(dim=-1)
    token = torch.multinomial(probs, 1)  # near-miss: the probabilities are used to sample
    best = probs.argmax(-1)  # near-miss: used, not logged
    picked = torch.log(probs[torch.arange(len(y)), y])  # expect: TD509
    return token, best, picked


def softmax_into_cross_entropy(x, y):
    l1 = F.cross_entropy(F.softmax(x, 1), y)  # expect: TD509
    l2 = nn.CrossEntropyLoss()(torch.softmax(x, dim=1), y)  # expect: TD509
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    l3 = criterion(softmax(x, 1), y)  # expect: TD509
    probs = F.softmax(x, 1)
    l4 = criterion(probs, y)  # expect: TD509
    l5 = F.cross_entropy(x, y)  # near-miss: logits
    l6 = F.cross_entropy(x, F.softmax(y, 1))  # near-miss: soft targets, the second argument
    return l1 + l2 + l3 + l4 + l5 + l6


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.softmax = nn.Softmax(dim=-1)
        self.criterion = nn.CrossEntropyLoss()
        self.act = nn.Sigmoid()
        self.bce = nn.BCELoss()

    def forward(self, x, y):
        loss = self.criterion(self.softmax(x), y)  # expect: TD509
        logp = torch.log(self.softmax(x))  # expect: TD509
        ok = self.criterion(x, y)  # near-miss: logits
        binary = self.bce(self.act(x), y)  # expect: TD510
        return loss, logp, ok, binary


def not_reported(x, y, w, mask, q, k, v):
    good = F.log_softmax(x, dim=-1)  # near-miss: the fused kernel
    good2 = x.log_softmax(-1)  # near-miss
    plain = torch.log(x)  # near-miss: not a softmax
    positive = torch.log(torch.sigmoid(x))  # expect: TD508
    attn = torch.softmax(q, dim=-1)  # near-miss: attention weights (q: the scores)
    out = attn @ v  # near-miss: the weights are used, never logged
    mixed = torch.log(F.softmax(x, -1) * w)  # near-miss: weighted, not a log_softmax
    other = torch.log(1 - F.softmax(x, -1))  # near-miss: the complement
    pair = torch.log(F.softmax(x, -1) + F.softmax(y, -1))  # near-miss: a mixture
    host = np.log(scipy.special.softmax(x.numpy(), axis=1))  # near-miss: numpy, not torch
    mean = torch.log(F.softmax(x, -1).mean(0))  # near-miss: log of a mean
    return good, good2, plain, positive, out, mixed, other, pair, host, mean


def reassigned(x, mask, w):
    p = F.softmax(x, -1)
    p = p * mask  # the name no longer holds the softmax
    a = torch.log(p)  # near-miss: reassigned
    r = F.softmax(x, -1)
    r[mask] = 0.0
    b = torch.log(r)  # near-miss: modified in place
    s = F.softmax(w, -1)
    s.mul_(mask)
    c = s.log()  # near-miss: modified in place
    return a, b, c


def before_assignment(p, x):
    early = torch.log(p)  # near-miss: p is a parameter here
    p = F.softmax(x, -1)
    return early, p


def sample(logits, temperature):
    probs = F.softmax(logits / temperature, dim=-1)  # near-miss: sampling only
    return torch.multinomial(probs, num_samples=1)


def logger_log(logger, x):
    probs = F.softmax(x, -1)
    logger.log(probs)  # near-miss: a logger, not torch.log
    return probs


def detr_loss_labels(src_logits, target_classes):
    probs = src_logits.softmax(-1)
    return F.cross_entropy(probs.transpose(1, 2), target_classes)  # expect: TD509 (rearranged)


def class_scores(src_logits, target_classes):
    probs = src_logits.softmax(-1)  # near-miss: probabilities for scoring, not for the loss
    loss = F.cross_entropy(src_logits.transpose(1, 2), target_classes)
    return loss, probs.max(-1)


class SVDHead(nn.Module):
    def forward(self, src_emb, tgt_emb, tgt):
        d_k = src_emb.size(1)
        scores = torch.matmul(src_emb.transpose(2, 1).contiguous(), tgt_emb) / math.sqrt(d_k)
        scores = torch.softmax(scores, dim=2)  # expect: TD507 (channels-first q^T @ k, then v @ att^T)
        return torch.matmul(tgt, scores.transpose(2, 1).contiguous())


def contrastive_rows(similarity):
    # the matching pair of row i sits in column i
    return -torch.log(similarity.softmax(dim=1).diagonal() + 1e-12).mean()  # expect: TD509


def chosen_probability(logits, labels):
    picked = torch.gather(F.softmax(logits, -1), 1, labels[:, None])
    return torch.log(picked).squeeze(1)  # expect: TD509 (a softmax's entries, picked)


def gaussian_log_det(cov):
    return torch.log(torch.diagonal(cov, dim1=-2, dim2=-1)).sum(-1)  # near-miss: no softmax

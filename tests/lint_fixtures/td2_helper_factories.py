"""TD204 through a list of host tensors, in a plain class's method a step loop calls, and
through a name a factory bound first (PointNet's feature transform regularizer)."""
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import Variable


class BoxSimilarity:
    def __init__(self, size=7):
        self.size = size

    def score(self, a, b):
        kernel = torch.ones(1, 1, self.size, self.size).to(a.device)  # expect: TD204 (every step)
        return F.conv2d(a * b, kernel).mean()

    def describe(self):
        return torch.ones(3).to("cuda")  # near-miss: no loop calls describe()


def warp(img, theta):
    n, _, h, w = img.shape
    axes = [torch.linspace(-1, 1, s) for s in (h, w)]
    coords = torch.stack(torch.meshgrid(axes, indexing="ij"), -1).to(img.device)  # expect: TD204
    return F.grid_sample(img, coords.expand(n, h, w, 2) @ theta[:, :2, :2], align_corners=True)


def axis_names(shape):
    sizes = [torch.arange(s) for s in shape]  # near-miss: host tensors never moved
    return [len(s) for s in sizes]


class Aligner(nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.eye(3).unsqueeze(0))

    def forward(self, img):
        return warp(img, self.theta)


def fit(model, loader, opt):
    sim, aux = BoxSimilarity(), BoxSimilarity(3)
    for moving, fixed in loader:
        moving, fixed = moving.cuda(), fixed.cuda()
        loss = sim.score(model(moving), fixed) + aux.score(moving, fixed) + orthogonality(moving)
        opt.zero_grad()
        loss.backward()
        opt.step()


def orthogonality(trans):
    eye = torch.eye(trans.size(1))[None, :, :]
    if trans.is_cuda:
        eye = eye.cuda()  # expect: TD204
    staging = torch.empty(trans.shape, pin_memory=True)
    staging.copy_(trans, non_blocking=True)
    noise = torch.randn(trans.shape, generator=torch.Generator().manual_seed(0))
    back = staging.cuda(non_blocking=True)  # near-miss: a pinned staging buffer
    return (trans @ trans.transpose(1, 2) - eye).norm() + 0 * back.sum() + noise.cuda().sum()  # near-miss: a CPU generator's draw


class STN3d(nn.Module):
    """PointNet's input transform: an identity from a NumPy literal, moved every forward."""

    def __init__(self, k=3):
        super().__init__()
        self.k = k
        self.fc3 = nn.Linear(256, k * k)

    def forward(self, x, offsets):
        x = self.fc3(x)
        iden = Variable(torch.from_numpy(np.array([1, 0, 0, 0, 1, 0, 0, 0, 1]).astype(np.float32))).view(1, 9)
        if x.is_cuda:
            iden = iden.cuda()  # expect: TD204
        shift = torch.from_numpy(np.array([offsets[0], offsets[1]]))
        return (x + iden).view(-1, 3, 3) + shift.cuda().sum()  # near-miss: an array of the call's data


def lengths_of(seqs):
    return torch.tensor([len(s) for s in seqs], dtype=torch.long)


def radial_weights(n):
    return torch.tensor([1.0 / (1 + k) for k in range(n)])


def span_mask(b, t, span=10):
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):  # (wav2vec 2.0's random spans, written on the host: one copy, not b*k kernels)
        for s in random.sample(range(t - span), 3):
            mask[i, s:s + span] = True
    return mask


def noise_scale(b):
    scale = torch.ones(b)
    return scale * 0.1


def train_lengths(model, loader, opt, device):
    for x, seqs, y in loader:
        n = lengths_of(seqs).to(device)  # near-miss: a batch's lengths, data that must move
        m = span_mask(x.shape[0], x.shape[1]).to(device)  # near-miss: filled by a Python loop
        x = x * m.unsqueeze(-1) * noise_scale(x.shape[0]).to(device)[:, None, None]  # expect: TD204
        w = radial_weights(10).to(device)  # expect: TD204 (the same numbers every step)
        loss = (F.cross_entropy(model(x.to(device), n), y.to(device), reduction="none") * w[y]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

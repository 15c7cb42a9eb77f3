"""TD204 through a list of host tensors, in a plain class's method a step loop calls, and
through a name a factory bound first (PointNet's feature transform regularizer)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


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

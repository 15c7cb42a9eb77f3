"""TD508 hand-written GELU / SiLU / softplus / log-sigmoid."""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class NewGELU(nn.Module):  # minGPT's
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))  # expect: TD508


def gelu_new(x):  # Hugging Face's old activations.py
    return 0.5 * x * (1 + (np.sqrt(2 / np.pi) * (x + 0.044715 * x.pow(3))).tanh())  # expect: TD508


def gelu_erf(x):
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))  # expect: TD508


def gelu_erf_scaled(x):
    return 0.5 * x * (1.0 + torch.special.erf(x * 0.7071067811865476))  # expect: TD508


def swish(x):
    return x * torch.sigmoid(x)  # expect: TD508


def swish_method(h):
    return h.sigmoid() * h  # expect: TD508


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)  # near-miss: QuickGELU, another function


def gated(a, b):
    return a * torch.sigmoid(b)  # near-miss: a gate, not SiLU


def normal_cdf(z):
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))  # near-miss: Phi(z), no x factor


def fused(x):
    y = F.gelu(x, approximate="tanh")  # near-miss: the fused kernel
    return torch.tanh(y) + F.silu(x)  # near-miss: a plain tanh


def gelu_back(g, x):  # near-miss: a hand-written derivative (Bloom's bloom_gelu_back)
    tanh_out = torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x))
    return g * (0.5 * x * (1 - tanh_out * tanh_out) + 0.5 * (1 + tanh_out))


def forward_forward_loss(g_pos, g_neg, threshold):  # pytorch/examples mnist_forward_forward
    return torch.log1p(torch.exp(torch.cat([-g_pos + threshold, g_neg - threshold]))).mean()  # expect: TD508


def softplus_forms(x, p):
    a = torch.log(1 + torch.exp(x))  # expect: TD508
    b = x.exp().log1p()  # expect: TD508
    c = torch.log(torch.sigmoid(x))  # expect: TD508
    ok1 = F.softplus(x)  # near-miss: the fused kernel
    ok2 = torch.log1p(x)  # near-miss: no exp inside
    ok3 = torch.log(2 + torch.exp(x))  # near-miss: not 1 + exp
    ok4 = torch.log(torch.exp(x).sum(-1))  # near-miss: a logsumexp by hand (another pattern)
    ok5 = torch.log1p(-torch.exp(x))  # near-miss: log(1 - e^x), another function
    ok6 = torch.log(p)  # near-miss: a plain log
    return a, b, c, ok1, ok2, ok3, ok4, ok5, ok6


def approx_standard_normal_cdf(x):  # lucidrains' learned_gaussian_diffusion: Phi(x), not GELU
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x**3))))  # near-miss: no x * ...


def swish_methods(x, y, inplace=False):  # timm's swish()
    a = x.mul_(x.sigmoid()) if inplace else x.mul(x.sigmoid())  # expect: TD508
    b = torch.mul(x, torch.sigmoid(x))  # expect: TD508
    ok1 = x.mul(y.sigmoid())  # near-miss: another tensor's sigmoid (a gate)
    ok2 = x.mul(2.0)  # near-miss: a scale
    return a, b, ok1, ok2


class AffineCoupling(torch.nn.Module):
    def forward(self, x):
        in_a, in_b = x.chunk(2, 1)
        log_s, t = self.net(in_a).chunk(2, 1)
        s = torch.sigmoid(log_s + 2)
        out_b = (in_b + t) * s
        logdet = torch.sum(torch.log(s).view(x.shape[0], -1), 1)  # expect: TD508
        gate = torch.sigmoid(t)
        gate = gate * 0.5 + 0.25
        return torch.cat([in_a, out_b], 1), logdet, torch.log(gate)  # near-miss: gate reassigned

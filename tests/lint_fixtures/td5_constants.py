"""TD511 a constant tensor built from a Python literal on every call or step."""

import math

import torch
import torch.nn as nn

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)  # module level: built once
SIGMAS = [0.26, 0.25, 0.25, 0.35]
SCALES = [1.0, 2.0]
SCALES.append(4.0)  # changed: no constant


class Normalize(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1))

    def forward(self, x):
        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device)  # expect: TD511
        scale = x.new_tensor([[1.0, -2.0], [3.0, 4.0]])  # expect: TD511
        one = torch.tensor(1.0, device=x.device)  # expect: TD511
        two = torch.tensor(2.0)  # a scalar left on the host: no copy, not reported
        idx = torch.tensor([x.shape[0], 2])  # built from values: data, not a constant
        return (x - mean.view(-1, 1, 1)) / self.std * scale.sum() * one * two + idx.sum()


class Perceptual(nn.Module):
    def preprocess(self, x):
        mean = torch.as_tensor((0.5, 0.5, 0.5), device=x.device)  # expect: TD511
        return x - mean.view(1, 3, 1, 1)

    def forward(self, x):
        return self.preprocess(self._crop(x))

    def _crop(self, x):
        return self._jitter(x[..., 1:-1, 1:-1])

    def _jitter(self, x):  # two calls from forward
        return x * torch.tensor([1.0, 0.9, 1.1], device=x.device).view(1, 3, 1, 1)  # expect: TD511


def init_weights(module):  # called once, by nothing per step
    module.weight.data.mul_(torch.tensor(0.02).cuda())


def normalize_batch(batch):
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)  # expect: TD511
    return batch / 255.0 - mean


def train(model, loader, opt):
    for x, y in loader:
        weights = torch.tensor([1.0, 2.0, 0.5]).cuda()  # expect: TD511
        loss = torch.nn.functional.cross_entropy(model(normalize_batch(x)), y, weight=weights)
        loss.backward()
        opt.step()


def check_devices():
    for k in range(torch.cuda.device_count()):  # a loop over devices: runs once
        x = torch.tensor([1, 2.0]).to(f"cuda:{k}")
        print(x)


def test_cases():
    for dtype in (torch.float32, torch.float64):  # test cases, not steps
        boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]], dtype=dtype)
        assert boxes.shape == (2, 4)


class Oks(nn.Module):
    def forward(self, d2):
        sigmas = torch.tensor(SIGMAS, device=d2.device)  # expect: TD511 (a module constant)
        scales = torch.tensor(SCALES)  # near-miss: the list changes
        return d2 / sigmas + scales.sum()


HARTREE_TO_MEV = 27211.386
UNITS = [HARTREE_TO_MEV]


def train_energies(model, loader, opt, device):
    for z, y in loader:
        scale = torch.tensor([HARTREE_TO_MEV / 1000.0], device=device)  # expect: TD511
        unit = torch.tensor([UNITS[0] * 2], device=device)  # near-miss: UNITS[0] is an index
        loss = ((model(z.to(device)) - y.to(device)).abs().mean() * scale * unit)
        loss.backward()
        opt.step()


class TanhSquash(nn.Module):
    def __init__(self, d_k):
        super().__init__()
        self.d_k = d_k

    def forward(self, u, q, k):
        logp = (2 * (torch.log(torch.tensor(2.0)) - u)).sum(-1)  # expect: TD511
        s = q @ k.transpose(-2, -1) / torch.sqrt(torch.tensor(self.d_k, dtype=torch.float32))  # expect: TD511
        n = torch.exp(torch.tensor(u.shape[0]))  # near-miss: a number read from the data
        return logp, s, n


LOG_TWO = torch.log(torch.tensor(2.0))  # near-miss: computed once, at import


class Softplus(nn.Module):
    def forward(self, x):
        return x * torch.sqrt(torch.exp(self.log_var))  # near-miss: a parameter, not a literal


def pinn_residual(model, x, t):
    nu = torch.tensor([0.01 / math.pi], device=x.device, dtype=x.dtype)  # expect: TD511
    u = model(torch.cat([x, t], 1))
    return u * nu


def pinn_train(model, opt, xs, ts):
    for x, t in zip(xs, ts):
        pinn_residual(model, x, t).mean().backward()
        opt.step()


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-torch.log(torch.tensor(float(max_period))) * torch.arange(half) / half)  # expect: TD511
    return torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1)


def scaled_scores(q, k):
    return q @ k.T / torch.sqrt(torch.tensor(k.shape[-1]))  # near-miss: a size of the data, not float(...) of a setting


class TimeMLP(nn.Module):
    def forward(self, x, t):
        return x + timestep_embedding(t, x.shape[-1]) + scaled_scores(x, x)


N_BINS = 64


def distogram_nll(logits, d):
    edges = torch.tensor([2.3125 + 0.3125 * i for i in range(N_BINS - 1)], device=d.device)  # expect: TD511
    bins = torch.bucketize(d, edges)
    counts = torch.tensor([0.5 * k for k in range(d.shape[-1])], device=d.device)  # near-miss: a range of the data's size
    lens = torch.tensor([2.0 * n for n in d.shape], device=d.device)  # near-miss: over the data's shape, not a range
    return F.cross_entropy(logits.flatten(0, -2), bins.flatten()) + 0 * counts.sum() + 0 * lens.sum()


def distogram_train(model, opt, loader):
    for aatype, d in loader:
        distogram_nll(model(aatype), d).backward()
        opt.step()


@torch.no_grad()
def annealed_langevin(net, sigmas, x, n_steps_each=10):
    for t in range(len(sigmas) - 1, -1, -1):  # a sampler's loop, whatever the function's name
        level = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        floor = torch.tensor(1e-6, device=x.device)  # expect: TD511
        for _ in range(n_steps_each):
            x = x + net(x, level) * torch.maximum(sigmas[t] ** 2, floor)
    return x


def discounted_tail(xs):
    total = xs[-1]
    for i in range(len(xs) - 2, -1, -1):  # a countdown whose variable reaches no call
        total = total + xs[i] * torch.tensor(0.5, device=total.device)  # near-miss: not a sampler's loop
    return total


def latent_ode_step(model, opt, loader, dev, noise_std):
    for x in loader:
        noise_lv = torch.tensor([2.0 * math.log(0.1)], device=dev)  # expect: TD511
        obs_lv = torch.tensor([2.0 * math.log(noise_std)], device=dev)  # near-miss: a variable's log
        ((model(x) - x) ** 2 / noise_lv.exp() + obs_lv).sum().backward()
        opt.step()

"""TD204 host tensors moved to the device every step; TD505 float64 in a CUDA training step."""

import math

import numpy as np
import torch
import torch.nn as nn


def train(model, loader, opt, device, gen, dev):
    for x in loader:
        x = x.cuda(non_blocking=True)
        noise = torch.randn(4, 8).cuda()  # expect: TD204
        mask = torch.zeros(x.shape[0], dtype=torch.bool).to(device)  # expect: TD204
        ones = torch.ones(3).to(torch.float16)  # near-miss: a dtype conversion
        good = torch.randn(4, 8, device=device)  # near-miss: created on the device
        seeded = torch.rand(4, generator=gen).to(device)  # near-miss: a CPU generator's data
        y = model(x.double())  # expect: TD505
        z = torch.zeros(3, dtype=torch.float64)  # expect: TD505
        loss = (y + noise.sum() + good.sum() + z.sum()).sum() + mask.sum() + ones.sum() + seeded.sum()
        loss.backward()
        opt.step()
        buf = torch.zeros(8).to(dev)  # expect: TD204
    ref = torch.randn(8).cuda()  # near-miss: once, before evaluation
    stats = torch.zeros(3, dtype=torch.float64)  # near-miss: outside the step
    return ref, stats


class Block(nn.Module):
    def forward(self, x):
        pos = torch.arange(x.shape[1]).to(x.device)  # expect: TD204
        return x + pos


def train_step(model, x, opt, device):
    noise = torch.randn(x.shape).to(device)  # expect: TD204
    loss = model(x + noise).sum()
    loss.backward()
    opt.step()


def make_reference(device):
    return torch.randn(8).to(device)  # near-miss: no loop, no training step


def vae_main(model, train, test, epochs, device):
    for epoch in range(1, epochs + 1):
        train(epoch)
        test(epoch)
        sample = torch.randn(64, 20).to(device)  # near-miss: once an epoch (a sample grid)
        model.decode(sample)


def separation_step(model, loader, opt, n_fft):
    for mix, sources in loader:
        win = torch.hann_window(n_fft).cuda()  # expect: TD204 (an STFT window, every step)
        spec = torch.stft(mix.cuda(), n_fft, window=win, return_complex=True)
        model(spec.abs()).sum().backward()
        opt.step()


def random_rotation(n, device):
    angles = torch.rand(n).to(device)  # expect: TD204 (run by Jitter.forward, every call)
    return torch.stack([angles.cos(), angles.sin()], -1)


class Jitter(nn.Module):
    def forward(self, x):
        return x @ random_rotation(x.shape[0], x.device)[..., None]


def make_grid(n, device):  # near-miss: nothing runs it per step
    return torch.arange(n).to(device)


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(timesteps.device)  # expect: TD204
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeUNet(torch.nn.Module):
    def forward(self, x, t):
        return self.body(x, timestep_embedding(t, 64))


def mixup(x, y, alpha):
    lam = torch.tensor(np.random.beta(alpha, alpha), dtype=torch.float32).cuda()  # expect: TD204
    idx = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[idx], y, y[idx], lam


def mixup_train(model, loader, opt):
    for x, y in loader:
        x, ya, yb, lam = mixup(x.cuda(non_blocking=True), y.cuda(non_blocking=True), 0.2)
        out = model(x)
        loss = lam * out[ya].mean() + (1 - lam) * out[yb].mean()
        loss.backward()
        opt.step()


class MemTransformer(nn.Module):
    def forward(self, word_emb, qlen, klen, mlen):
        mask = torch.triu(torch.ones(qlen, klen), diagonal=1 + mlen).bool().to(word_emb.device)  # expect: TD204
        keep = torch.randperm(qlen)[: qlen // 2].to(word_emb.device)  # expect: TD204
        return self.layers(word_emb[keep], mask)


mel_basis, hann_window = {}, {}


def mel_spectrogram(y, n_fft, win_size):
    key = str(y.device)
    if key not in mel_basis:  # (a cache filled once per device)
        hann_window[key] = torch.hann_window(win_size).to(y.device)  # near-miss: once per device
    return torch.stft(y, n_fft, window=hann_window[key], return_complex=True).abs()


class Spectrogram(nn.Module):
    window = None

    def forward(self, y):
        if self.window is None:
            self.window = torch.hann_window(400).to(y.device)  # near-miss: the first call only
        return torch.stft(y, 400, window=self.window, return_complex=True).abs()


def train_dlrm(dlrm, loader, opt, tables):
    for dense, sparse, target in loader:
        offsets = torch.arange(dense.shape[0]).repeat(tables, 1).cuda()  # expect: TD204
        loss = dlrm(dense.cuda(), offsets, sparse.cuda()).sub(target.cuda()).pow(2).mean()
        loss.backward()
        opt.step()


def gaussian(size, sigma):
    gauss = torch.Tensor([math.exp(-((x - size // 2) ** 2) / (2 * sigma**2)) for x in range(size)])
    return gauss / gauss.sum()


def create_window(size, channel):
    w1 = gaussian(size, 1.5).unsqueeze(1)
    return w1.mm(w1.t()).float().expand(channel, 1, size, size).contiguous()


def create_window_on(size, channel, device):
    w1 = torch.ones(size, 1, device=device) / size
    return w1.mm(w1.t()).expand(channel, 1, size, size)


def ssim(img1, img2, size=11):
    window = create_window(size, img1.size(-3))
    window = window.cuda(img1.get_device())  # expect: TD204 (built on the host two calls away)
    window = window.type_as(img1)
    near = create_window_on(size, img1.size(-3), img1.device)
    near = near.to(img1.device)  # near-miss: its factory was given the device
    return (nn.functional.conv2d(img1 - img2, window, groups=img1.size(-3)) * near.mean()).mean()


def fit_ssim(model, loader, opt):
    kernel = create_window(11, 3).cuda()  # near-miss: once, before the loop
    for x, y in loader:
        loss = 1 - ssim(model(x.cuda()), y.cuda()) + kernel.mean()
        loss.backward()
        opt.step()


def augment_step(model, points, opt, device):
    jitter = torch.randn(points.shape).clamp_(-0.05, 0.05).to(device)  # expect: TD204
    scale = torch.rand(points.shape[0]).mul(0.4).add(0.8).cuda()  # expect: TD204
    shift = torch.rand(3, device=device).mul(0.1).to(torch.float16)  # near-miss: made on the device
    clipped = points.clamp(-1, 1).to(device)  # near-miss: data, not a host factory
    loss = model(clipped * scale[:, None, None] + jitter + shift).sum()
    loss.backward()
    opt.step()

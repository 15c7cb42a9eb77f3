"""TD206 for a stop test inside a module's forward (not TD205), with SciPy-style tolerance
names; TD505 in a helper of a loss the training loop calls."""

import torch
import torch.nn as nn


class Aligner(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def refine(self, pose, target, steps, xtol):
        for it in range(steps):
            delta = self.encoder(pose) - target
            size = delta.norm(dim=-1).max()
            if float(size) < xtol:  # expect: TD206
                break
            pose = pose - 0.1 * delta
        return pose

    def refine_sparse(self, pose, target, steps, xtol):
        for it in range(steps):
            delta = self.encoder(pose) - target
            if it % 5 == 0 and float(delta.norm(dim=-1).max()) < xtol:  # near-miss: every 5th
                break
            pose = pose - 0.1 * delta
        return pose

    def forward(self, pose, target):
        return self.refine(pose, target, 20, 1e-6) + self.refine_sparse(pose, target, 20, 1e-6)


def spectrum(wave, size):
    window = torch.hann_window(size, device=wave.device)
    return torch.stft(wave.double(), size, window=window.double(), return_complex=True).abs()  # expect: TD505


def spectrum_plain(wave, size):
    window = torch.hann_window(size, device=wave.device)
    return torch.stft(wave, size, window=window, return_complex=True).abs()  # near-miss: float32


def spectral_loss(fake, real):
    total = 0.0
    for size in (512, 1024):
        total = total + (spectrum(fake, size) - spectrum(real, size)).abs().mean().float()
        total = total + (spectrum_plain(fake, size) - spectrum_plain(real, size)).abs().mean()
    return total


def precise_report(fake, real):
    return (spectrum(fake, 2048) - spectrum(real, 2048)).abs().mean()  # near-miss: not per step


def train(gen, loader, opt):
    for noise, wave in loader:
        fake = gen(noise.cuda())
        loss = spectral_loss(fake, wave.cuda())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return precise_report(fake, wave)

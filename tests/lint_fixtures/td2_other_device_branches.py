"""TD205 / TD201: a host read in a branch for another device than CUDA (Demucs' spectrogram
moves to the CPU on Apple GPUs, which lack complex numbers) never runs on a CUDA machine."""

import torch
import torch.nn as nn


def spectro(x, n_fft=512):
    is_mps = x.device.type == "mps"
    if is_mps:
        x = x.cpu()  # near-miss: Apple GPUs only (no complex numbers there)
    return torch.stft(x, n_fft, return_complex=True)


class HybridDemucs(nn.Module):
    def forward(self, mix):
        z = spectro(mix)
        if mix.is_mps:
            z = z.cpu()  # near-miss: another device's branch
        elif z.abs().max().item() > 1e4:  # expect: TD205
            z = z / 1e4
        if z.device.type == "mps" and self.training:
            mix = mix.cpu()  # near-miss: another device's branch
        else:
            mix = mix.cpu()  # expect: TD205 (the branch an NVIDIA GPU runs)
        return z, mix


def train(model, loader, opt):
    for x, y in loader:
        x, y = x.to("mps"), y.to("mps")
        loss = model(x, y)
        loss.backward()
        opt.step()
        if loss.device.type == "xla":
            print(loss.item())  # near-miss: a TPU's branch
        print(loss.item())  # expect: TD201

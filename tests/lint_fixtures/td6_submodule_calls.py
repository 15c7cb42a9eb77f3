# A denoising loop calling a part of the model by attribute (DiffWave's mel conditioner as
# `model.upsampler`): the same arguments every step are the same result every step.
import torch


@torch.no_grad()
def vocode(model, mel, n=1):
    x = torch.randn(n, mel.shape[-1] * 256, device=mel.device)
    for t in range(model.T - 1, -1, -1):
        cond = model.upsampler(mel)  # expect: TD601
        eps = model(x, torch.full((n,), t, device=mel.device), cond=cond)
        x = (x - model.beta[t] * eps) / (1 - model.beta[t]).sqrt()
    return x


@torch.no_grad()
def vocode_cached(model, mel, n=1):
    cond = model.upsampler(mel)  # near-miss: the conditioner runs once, before the loop
    x = torch.randn(n, mel.shape[-1] * 256, device=mel.device)
    for t in range(model.T - 1, -1, -1):
        eps = model(x, torch.full((n,), t, device=mel.device), cond=cond)
        x = model.denoise_step(x, eps, t)  # near-miss: its arguments change every step
        model.to(mel.device)  # near-miss: the Module's own method, no submodule run
        x = stats.normalize(x, mel)  # near-miss: not a model's attribute
    return x


stats = None

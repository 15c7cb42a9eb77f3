import math

import pytest
import torch

from torchdoctor.workloads import build
from torchdoctor.workloads.diffusion_schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    linear_alphas_cumprod,
)


def test_ddim_step_matches_closed_form_update():
    torch.manual_seed(0)
    sched = DDIMScheduler(num_train_timesteps=100, num_inference_steps=10)
    assert sched.timesteps.tolist() == list(range(90, -1, -10))
    alpha_bar = linear_alphas_cumprod(100)
    x, eps = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    for t in (90, 50, 10, 0):
        a = alpha_bar[t]
        a_prev = alpha_bar[t - 10] if t >= 10 else torch.tensor(1.0, dtype=torch.float64)
        # DDIM eq. 12 with sigma = 0
        expected = (
            torch.sqrt(a_prev) * (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)
            + torch.sqrt(1 - a_prev) * eps
        )
        torch.testing.assert_close(sched.step(eps, t, x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 5, 10, 100])
def test_ddim_with_oracle_noise_recovers_the_clean_sample(steps):
    torch.manual_seed(1)
    x0 = torch.randn(2, 6, dtype=torch.float64)
    sched = DDIMScheduler(100, steps)
    alpha_bar = linear_alphas_cumprod(100)
    t0 = int(sched.timesteps[0])
    noise = torch.randn_like(x0)
    x = math.sqrt(alpha_bar[t0]) * x0 + math.sqrt(1 - alpha_bar[t0]) * noise
    for t in sched.timesteps.tolist():
        eps = (x - math.sqrt(alpha_bar[t]) * x0) / math.sqrt(1 - alpha_bar[t])
        x = sched.step(eps, t, x)
    torch.testing.assert_close(x, x0, rtol=1e-9, atol=1e-9)


def test_ddpm_last_step_is_deterministic_and_returns_x0_prediction():
    sched = DDPMScheduler(50)
    x, eps = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    a = linear_alphas_cumprod(50)[0]
    expected = (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)
    torch.testing.assert_close(sched.step(eps, 0, x), expected)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sched.step(eps, 10, x, g1), sched.step(eps, 10, x, g2))


def test_ddim_rejects_more_steps_than_training_timesteps():
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDIMScheduler(10, 20)


def test_diffusion_policy_variants_and_equivalence():
    w = build("diffusion_policy", scale="tiny")
    slow, fast = w.slow_step(), w.fast_step()
    assert slow.shape == fast.shape == w.shape
    assert torch.isfinite(slow).all() and torch.isfinite(fast).all()
    report = w.check_equivalence()
    assert report.equivalent, report.summary()
    cached = [c for c in report.checks if "caching alone" in c.name][0]
    assert cached.passed and cached.value == 0.0
    assert any(c.passed is None and "ddim" in c.name for c in report.checks)


def test_encoder_is_called_once_per_denoising_step_in_slow_and_once_in_fast():
    w = build("diffusion_policy", scale="tiny")
    calls = []
    handle = w.model.encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        w.slow_step()
        slow_calls = len(calls)
        calls.clear()
        w.fast_step()
    finally:
        handle.remove()
    assert slow_calls == w.config.slow_steps
    assert len(calls) == 1


def test_slow_steps_must_cover_the_training_schedule():
    with pytest.raises(ValueError, match="slow_steps"):
        build("diffusion_policy", scale="tiny", slow_steps=7)


def test_fast_variant_with_bf16_autocast_and_ddpm_options_runs():
    w = build("diffusion_policy", scale="tiny", fast_bf16=True, fast_attention="math")
    out = w.fast_step()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    w = build("diffusion_policy", scale="tiny", fast_scheduler="ddpm", fast_steps=20)
    assert torch.equal(w.fast_step(), w.sample("ddpm", 20, cache_encoder=True, attention="sdpa"))

"""DDPM and DDIM samplers for epsilon-prediction models (own implementation, no diffusers).

Both use a linear beta schedule over ``num_train_timesteps`` like diffusers' defaults
(``beta_start=1e-4``, ``beta_end=0.02``), no sample clipping. DDIM uses diffusers' "leading"
timestep spacing (``step_ratio = T // n``; timesteps ``(n-1)*ratio, ..., ratio, 0``),
``set_alpha_to_one=True`` (the last step goes to alpha_bar = 1) and eta = 0, i.e. the closed
form ``x_prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps`` with
``x0 = (x - sqrt(1 - a) * eps) / sqrt(a)``.

Example:
    >>> s = DDIMScheduler(num_train_timesteps=100, num_inference_steps=10)
    >>> s.timesteps.tolist()[:3]
    [90, 80, 70]
"""

from __future__ import annotations

from typing import Any

import torch


def linear_alphas_cumprod(
    num_train_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s) for a linear beta schedule (float64).

    Example:
        >>> linear_alphas_cumprod(10).shape
        torch.Size([10])
    """
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def _set_schedule(scheduler: Any, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> None:
    """The noise table and the timesteps, as tensors and as host numbers read by ``step``
    (host floats: no tensor read per denoising step)."""
    scheduler.alphas_cumprod = alphas_cumprod
    scheduler.timesteps = timesteps
    scheduler._alpha_bar = alphas_cumprod.tolist()
    scheduler.timestep_list = timesteps.tolist()


class DDPMScheduler:
    """Ancestral DDPM sampling over every training timestep (posterior variance beta-tilde).

    Example:
        >>> s = DDPMScheduler(num_train_timesteps=5)
        >>> x = s.step(torch.zeros(1, 2), 4, torch.ones(1, 2), torch.Generator().manual_seed(0))
        >>> x.shape
        torch.Size([1, 2])
    """

    def __init__(self, num_train_timesteps: int = 100, beta_start=1e-4, beta_end=0.02):
        _set_schedule(
            self,
            linear_alphas_cumprod(num_train_timesteps, beta_start, beta_end),
            torch.arange(num_train_timesteps - 1, -1, -1),
        )

    def step(
        self,
        eps: torch.Tensor,
        t: int,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        a = self._alpha_bar[t]
        a_prev = self._alpha_bar[t - 1] if t > 0 else 1.0
        beta = 1.0 - a / a_prev
        x0 = (x - (1.0 - a) ** 0.5 * eps) / a**0.5
        mean = (a_prev**0.5 * beta / (1.0 - a)) * x0 + (
            (1.0 - beta) ** 0.5 * (1.0 - a_prev) / (1.0 - a)
        ) * x
        if t == 0:
            return mean
        variance = max((1.0 - a_prev) / (1.0 - a) * beta, 1e-20)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return mean + variance**0.5 * noise


class DDIMScheduler:
    """Deterministic DDIM (eta = 0) over ``num_inference_steps`` of the training schedule.

    Example:
        >>> s = DDIMScheduler(num_train_timesteps=10, num_inference_steps=10)
        >>> s.step(torch.zeros(1), 0, torch.ones(1)).shape  # the last step returns x0
        torch.Size([1])
    """

    def __init__(
        self,
        num_train_timesteps: int = 100,
        num_inference_steps: int = 10,
        beta_start=1e-4,
        beta_end=0.02,
    ):
        if not 1 <= num_inference_steps <= num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in 1..{num_train_timesteps}, "
                f"got {num_inference_steps}"
            )
        self.step_ratio = num_train_timesteps // num_inference_steps
        _set_schedule(
            self,
            linear_alphas_cumprod(num_train_timesteps, beta_start, beta_end),
            (torch.arange(num_inference_steps) * self.step_ratio).flip(0),
        )

    def step(
        self,
        eps: torch.Tensor,
        t: int,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        prev_t = t - self.step_ratio
        a = self._alpha_bar[t]
        a_prev = self._alpha_bar[prev_t] if prev_t >= 0 else 1.0
        x0 = (x - (1.0 - a) ** 0.5 * eps) / a**0.5
        return a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps

"""Seed 001: conditional sampling of a DiT trajectory planner (inference; one step = one sample).

- slow: DDPM over all 100 training timesteps, the whole model (condition encoder included)
  every denoising step, explicit-math attention. The encoder is its own ``nn.Module`` called
  with identical inputs every step: the profiler's loop-invariant recomputation detector
  (``session["recomputation"]``) names it.
- fast: the encoder once per sample with its memory reused by every step, DDIM with
  ``fast_steps`` steps (10 by default), SDPA attention, optional bf16 autocast.

Equivalence: caching the encoder alone (same DDPM, same attention, same noise) gives identical
samples; SDPA vs math attention agree to 1e-5; DDIM 10 vs DDPM 100 reports the trajectory
difference (a different sampler of an untrained model: reported, not judged).

Example:
    >>> from torchdoctor.workloads import build
    >>> w = build("diffusion_policy", scale="tiny")
    >>> w.fast_step().shape
    torch.Size([1, 4, 2])
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch

from torchdoctor.workloads.base import (
    EquivalenceReport,
    ProfileTarget,
    Workload,
    region,
    seeded_generator,
)
from torchdoctor.workloads.diffusion_model import PlannerSize, TrajectoryDenoiser
from torchdoctor.workloads.diffusion_schedulers import DDIMScheduler, DDPMScheduler


@dataclass
class DiffusionPolicyConfig(PlannerSize):
    """The planner's sizes plus the sampling settings of both variants.

    Example:
        >>> config = DiffusionPolicyConfig(n_emb=16, n_head=2)
        >>> config.slow_steps, config.n_emb
        (100, 16)
    """

    batch_size: int = 2
    train_timesteps: int = 100
    slow_steps: int = 100  # DDPM over every training timestep
    fast_scheduler: str = "ddim"  # "ddim" or "ddpm"
    fast_steps: int = 10
    fast_attention: str = "sdpa"  # "sdpa" or "math"
    fast_bf16: bool = False  # bf16 autocast in the fast variant
    cache_encoder: bool = True
    seed: int = 0


class DiffusionPolicy(Workload):
    """Seed 001 workload; see the module docstring.

    Example:
        >>> w = DiffusionPolicy(scale="tiny")
        >>> w.kind, w.seed_id
        ('inference', '001')
    """

    name = "diffusion_policy"
    seed_id = "001"
    summary = "DiT planner sampling: DDPM 100 + encoder every step vs cached encoder + DDIM"
    kind = "inference"
    demo_steps = 2
    Config = DiffusionPolicyConfig
    presets = {
        "tiny": {
            "n_emb": 16,
            "n_head": 2,
            "n_layer": 1,
            "n_encoder_layer": 1,
            "vl_tokens": 16,
            "vl_dim": 16,
            "vl_pooled": 4,
            "reasoning_tokens": 8,
            "reasoning_dim": 16,
            "reasoning_pooled": 2,
            "horizon": 4,
            "batch_size": 1,
            "train_timesteps": 20,
            "slow_steps": 20,
            "fast_steps": 5,
        },
        "cpu": {},
        "seed": {
            "n_emb": 768,
            "n_head": 12,
            "n_layer": 12,
            "n_encoder_layer": 4,
            "vl_tokens": 1024,
            "vl_dim": 1024,
            "vl_pooled": 64,
            "reasoning_tokens": 128,
            "reasoning_dim": 1024,
            "reasoning_pooled": 16,
            "batch_size": 4,
        },
    }

    def setup(self) -> None:
        cfg = self.config
        if cfg.slow_steps != cfg.train_timesteps:
            raise ValueError(
                f"slow_steps ({cfg.slow_steps}) must equal train_timesteps "
                f"({cfg.train_timesteps}): DDPM samples over every training timestep"
            )
        size_fields = {f.name for f in dataclasses.fields(PlannerSize)}
        size = PlannerSize(**{k: getattr(cfg, k) for k in size_fields})
        torch.manual_seed(cfg.seed)
        self.model = TrajectoryDenoiser(size).to(self.device).eval()
        g = seeded_generator(cfg.seed)
        b = cfg.batch_size
        self.conditions = tuple(
            t.to(self.device)
            for t in (
                torch.randn(b, cfg.vl_tokens, cfg.vl_dim, generator=g),
                torch.randn(b, cfg.reasoning_tokens, cfg.reasoning_dim, generator=g),
                torch.randn(b, cfg.ego_dim, generator=g),
            )
        )
        self.shape = (b, cfg.horizon, cfg.action_dim)

    # -- sampling --------------------------------------------------------------------------
    def _scheduler(self, kind: str, steps: int):
        """Built once per (kind, steps) and reused: schedules are host-side constants."""
        cache = self.__dict__.setdefault("_schedulers", {})
        if (kind, steps) not in cache:
            if kind == "ddpm":
                cache[kind, steps] = DDPMScheduler(self.config.train_timesteps)
            elif kind == "ddim":
                cache[kind, steps] = DDIMScheduler(self.config.train_timesteps, steps)
            else:
                raise ValueError(f"scheduler must be 'ddpm' or 'ddim', got {kind!r}")
        return cache[kind, steps]

    @torch.no_grad()
    def sample(
        self,
        scheduler: str = "ddpm",
        steps: int = 100,
        cache_encoder: bool = False,
        attention: str = "math",
        bf16: bool = False,
        seed: int | None = None,
    ) -> torch.Tensor:
        """One conditional sample; the same ``seed`` gives the same initial and DDPM noise."""
        cfg = self.config
        sched = self._scheduler(scheduler, steps)
        self.model.set_attention(attention)
        g = seeded_generator(cfg.seed + 1 if seed is None else seed, self.device)
        x = torch.randn(self.shape, generator=g, device=self.device)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if bf16
            else contextlib.nullcontext()
        )
        with autocast:
            if cache_encoder:
                memory, vl_features = self.model.encode(*self.conditions)
            for t in sched.timestep_list:
                t_batch = torch.full((self.shape[0],), t, device=self.device, dtype=torch.long)
                if cache_encoder:
                    eps = self.model.decode(x, t_batch, memory, vl_features)
                else:
                    eps = self.model(x, t_batch, *self.conditions)
                with region("scheduler_step"):
                    x = sched.step(eps.float(), t, x, generator=g)
        return x

    def slow_step(self) -> torch.Tensor:
        """DDPM over every timestep, the whole model each step (the seed's conditional_sample)."""
        return self.sample("ddpm", self.config.slow_steps, cache_encoder=False, attention="math")

    def fast_step(self) -> torch.Tensor:
        cfg = self.config
        return self.sample(
            cfg.fast_scheduler,
            cfg.fast_steps,
            cache_encoder=cfg.cache_encoder,
            attention=cfg.fast_attention,
            bf16=cfg.fast_bf16,
        )

    def cached_only_step(self) -> torch.Tensor:
        """The slow sampler with only the encoder cached (measures caching alone)."""
        return self.sample("ddpm", self.config.slow_steps, cache_encoder=True, attention="math")

    def comparisons(self):
        cfg = self.config
        return [
            (
                f"ddpm {cfg.slow_steps} vs cached encoder + {cfg.fast_scheduler} {cfg.fast_steps}",
                self.slow_step,
                self.fast_step,
            ),
            (
                f"encoder caching alone (ddpm {cfg.slow_steps})",
                self.slow_step,
                self.cached_only_step,
            ),
        ]

    def profile_target(self, variant: str = "slow") -> ProfileTarget:
        target = super().profile_target(variant)
        target.model = self.model
        return target

    def check_equivalence(self) -> EquivalenceReport:
        """Caching alone: identical samples; SDPA: 1e-5; DDIM vs DDPM: reported difference."""
        report = EquivalenceReport(self.name)
        slow = self.slow_step()
        cached = self.cached_only_step()
        report.add(
            "encoder caching alone: identical samples (same noise)",
            bool(torch.equal(slow, cached)),
            float((slow - cached).abs().max()),
            detail="max |slow - cached|",
        )
        math_eps, sdpa_eps = (self._one_eps(impl) for impl in ("math", "sdpa"))
        attn_diff = float((math_eps - sdpa_eps).abs().max())
        report.add(
            "SDPA vs math attention, one denoiser call",
            attn_diff <= 1e-5,
            attn_diff,
            tolerance=1e-5,
        )
        fast = self.fast_step()
        scale = float(slow.abs().mean())
        diff = float((fast - slow).norm(dim=-1).mean())
        report.add(
            f"{self.config.fast_scheduler} {self.config.fast_steps} steps vs ddpm "
            f"{self.config.slow_steps}: mean waypoint distance",
            None,
            diff,
            detail=f"mean |waypoint| of the slow sample {scale:.3g} (untrained model)",
        )
        if self.config.fast_scheduler == "ddim":
            full = self.sample("ddim", self.config.train_timesteps, cache_encoder=True)
            few = self.sample("ddim", self.config.fast_steps, cache_encoder=True)
            report.add(
                f"ddim {self.config.fast_steps} vs ddim {self.config.train_timesteps} "
                "(deterministic): mean waypoint distance",
                None,
                float((few - full).norm(dim=-1).mean()),
            )
        return report

    @torch.no_grad()
    def _one_eps(self, attention: str) -> torch.Tensor:
        self.model.set_attention(attention)
        g = seeded_generator(self.config.seed + 2, self.device)
        x = torch.randn(self.shape, generator=g, device=self.device)
        t = torch.full((self.shape[0],), self.config.train_timesteps // 2, device=self.device)
        return self.model(x, t, *self.conditions)

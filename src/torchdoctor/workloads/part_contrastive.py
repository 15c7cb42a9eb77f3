"""Seed 000: a part-aware contrastive re-ID training step (one step = one optimizer step).

A small CNN maps two augmented views of each image to feature maps; K parts of d channels are
sampled at the peaks of each map, view 2's parts are matched to view 1's, each image gets a
covariance Sigma-plus of its parts, and the loss is CE + PaC (Mahalanobis semi-hard triplet
under Sigma-plus) + SoC (distance between the two views' part covariances). See
:mod:`torchdoctor.workloads.part_contrastive_losses` for the pieces.

- slow: per-image part sampling with ``.item()``, CPU scipy matching every step, one
  ``linalg.solve`` per (anchor, candidate) pair, log-Euclidean SoC image by image.
- fast: batched peaks and on-device batched matching, detached and cached for
  ``refresh_every`` steps; one Cholesky per image and whitened distances; two-stage negatives
  (cosine top-M, then exact); ``fro`` SoC.

Equivalence: the fast variant with ``top_m`` >= pool, ``refresh_every=1`` and the slow's SoC
metric gives the slow's loss to 1e-5 (same weights, same batch); the approximate settings
(top-M, ``fro``, stale matching) report their loss difference.

Example:
    >>> from torchdoctor.workloads import build
    >>> w = build("part_contrastive", scale="tiny")
    >>> w.check_equivalence().equivalent
    True
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchdoctor.workloads import part_contrastive_losses as losses
from torchdoctor.workloads.base import (
    EquivalenceReport,
    ProfileTarget,
    Workload,
    region,
    seeded_generator,
)


@dataclass
class PartContrastiveConfig:
    """The sizes of the part-contrastive step (``presets`` pick them per scale).

    Example:
        >>> PartContrastiveConfig(batch_size=4).parts
        4
    """

    batch_size: int = 8
    image_size: int = 32
    parts: int = 4  # K
    dim: int = 64  # d
    identities: int = 16
    batches: int = 4
    ridge: float = 0.1  # Sigma-plus = cov + ridge * I
    margin: float = 0.5
    pac_weight: float = 1.0
    soc_weight: float = 0.1
    slow_soc_metric: str = "log_euclidean"
    fast_soc_metric: str = "fro"
    top_m: int = 32
    refresh_every: int = 2  # t: steps between recomputing part positions and matching
    matching: str = "exact"  # fast: "exact" (batched on device) or "greedy"
    # fast, optional: > 0 replaces the per-image Sigma-plus of PaC by one shared, detached EMA
    # (this decay) of the batch-mean covariance: one Cholesky per step (seed 000's Sigma EMA)
    covariance_ema: float = 0.0
    lr: float = 0.01
    seed: int = 0


class PartBackbone(nn.Module):
    """Small CNN: image (B, 3, S, S) -> feature map (B, d, S/4, S/4); plus an identity head.

    Example:
        >>> fmap, logits = PartBackbone(dim=8, identities=5)(torch.randn(2, 3, 16, 16))
        >>> fmap.shape, logits.shape
        (torch.Size([2, 8, 4, 4]), torch.Size([2, 5]))
    """

    def __init__(self, dim: int, identities: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, dim, 3, padding=1),
        )
        self.head = nn.Linear(dim, identities)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.features(images)
        return fmap, self.head(fmap.mean((2, 3)))


class PartContrastive(Workload):
    """Seed 000 workload; see the module docstring.

    Example:
        >>> PartContrastive.seed_id, PartContrastive.kind, sorted(PartContrastive.presets)[0]
        ('000', 'train', 'cpu')
    """

    name = "part_contrastive"
    seed_id = "000"
    summary = "part-aware contrastive training step: per-pair solves + CPU matching vs batched"
    kind = "train"
    demo_steps = 2
    Config = PartContrastiveConfig
    presets = {
        "tiny": {"batch_size": 4, "image_size": 16, "dim": 16, "identities": 4, "batches": 2},
        "cpu": {},
        "seed": {"batch_size": 64, "image_size": 128, "identities": 751},
    }

    def setup(self) -> None:
        cfg = self.config
        g = seeded_generator(cfg.seed)
        s = cfg.image_size
        prototypes = torch.randn(cfg.identities, 3, s // 4, s // 4, generator=g)
        prototypes = F.interpolate(prototypes, size=(s, s), mode="bilinear", align_corners=False)
        self.batches = []
        for _ in range(cfg.batches):
            labels = torch.randint(cfg.identities, (cfg.batch_size,), generator=g)
            base = prototypes[labels]
            views = []
            for _ in range(2):
                shift = torch.randint(-2, 3, (2,), generator=g).tolist()
                view = torch.roll(base, shifts=shift, dims=(2, 3))
                views.append(view + 0.3 * torch.randn(view.shape, generator=g))
            self.batches.append(tuple(t.to(self.device) for t in (*views, labels)))
        torch.manual_seed(cfg.seed)
        self.init_model = PartBackbone(cfg.dim, cfg.identities).to(self.device)
        self.slow = self._new_state()
        self.fast = self._new_state()

    def _new_state(self) -> dict[str, Any]:
        model = copy.deepcopy(self.init_model)
        return {
            "model": model,
            "optimizer": torch.optim.SGD(model.parameters(), lr=self.config.lr, momentum=0.9),
            "step": 0,
            "cache": None,
            "covariance_ema": None,
        }

    # -- losses ---------------------------------------------------------------------------------
    def slow_loss(self, model: nn.Module, batch) -> torch.Tensor:
        cfg = self.config
        view1, view2, labels = batch
        fmap1, logits1 = model(view1)
        fmap2, logits2 = model(view2)
        with region("part_sampling"):
            parts1, _ = losses.sample_parts_slow(fmap1, cfg.parts)
            parts2, _ = losses.sample_parts_slow(fmap2, cfg.parts)
        with region("matching"):
            columns = losses.match_slow(parts1, parts2)
            parts2 = torch.stack([parts2[b, columns[b]] for b in range(parts2.shape[0])])
        with region("covariance"):
            cov = losses.covariance_slow(torch.cat([parts1, parts2], 1), cfg.ridge)
        with region("pac_mahalanobis"):
            pac = losses.pac_slow(parts1, parts2, cov, cfg.margin)
        with region("soc_spd_distance"):
            soc = losses.soc_slow(parts1, parts2, cfg.ridge, cfg.slow_soc_metric)
        ce = 0.5 * (F.cross_entropy(logits1, labels) + F.cross_entropy(logits2, labels))
        return ce + cfg.pac_weight * pac + cfg.soc_weight * soc

    def fast_loss(
        self,
        model: nn.Module,
        batch,
        state: dict[str, Any] | None = None,
        *,
        top_m: int | None = None,
        soc_metric: str | None = None,
        refresh_every: int | None = None,
        matching: str | None = None,
    ) -> torch.Tensor:
        cfg = self.config
        top_m = cfg.top_m if top_m is None else top_m
        soc_metric = cfg.fast_soc_metric if soc_metric is None else soc_metric
        refresh_every = cfg.refresh_every if refresh_every is None else refresh_every
        matching = cfg.matching if matching is None else matching
        view1, view2, labels = batch
        fmap1, logits1 = model(view1)
        fmap2, logits2 = model(view2)
        step = state["step"] if state is not None else 0
        cache = state["cache"] if state is not None else None
        if cache is None or step % refresh_every == 0:
            with region("part_sampling"):
                pos1 = losses.sample_positions_fast(fmap1, cfg.parts)
                pos2 = losses.sample_positions_fast(fmap2, cfg.parts)
            with region("matching"):
                columns = losses.match_fast(
                    losses.gather_parts(fmap1.detach(), pos1),
                    losses.gather_parts(fmap2.detach(), pos2),
                    matching,
                )
                cache = (pos1, pos2.gather(1, columns))
            if state is not None:
                state["cache"] = cache
        parts1 = losses.gather_parts(fmap1, cache[0])
        parts2 = losses.gather_parts(fmap2, cache[1])
        with region("covariance"):
            cov = losses.covariance_fast(torch.cat([parts1, parts2], 1), cfg.ridge)
            if cfg.covariance_ema > 0 and state is not None:
                cov = self._shared_covariance(state, cov)
        with region("pac_mahalanobis"):
            pac = losses.pac_fast(parts1, parts2, cov, cfg.margin, top_m)
        with region("soc_spd_distance"):
            soc = losses.soc_fast(parts1, parts2, cfg.ridge, soc_metric)
        ce = 0.5 * (F.cross_entropy(logits1, labels) + F.cross_entropy(logits2, labels))
        return ce + cfg.pac_weight * pac + cfg.soc_weight * soc

    def _shared_covariance(self, state: dict[str, Any], cov: torch.Tensor) -> torch.Tensor:
        from torchdoctor.ops import CovarianceEMA

        if state["covariance_ema"] is None:
            state["covariance_ema"] = CovarianceEMA(decay=self.config.covariance_ema)
        ema = state["covariance_ema"]
        ema.update(cov.detach().mean(0))
        return ema.value()  # (d, d): broadcast over the images by pac_fast

    # -- steps ----------------------------------------------------------------------------------
    def _train_step(self, state: dict[str, Any], fast: bool) -> torch.Tensor:
        batch = self.batches[state["step"] % len(self.batches)]
        model, opt = state["model"], state["optimizer"]
        loss = self.fast_loss(model, batch, state) if fast else self.slow_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        return loss.detach()

    def slow_step(self) -> torch.Tensor:
        return self._train_step(self.slow, fast=False)

    def fast_step(self) -> torch.Tensor:
        return self._train_step(self.fast, fast=True)

    @torch.no_grad()
    def inference(self, variant: str = "slow") -> torch.Tensor:
        """Inference as deployed: backbone + identity head on one view (no parts, no losses)."""
        model = (self.slow if variant == "slow" else self.fast)["model"]
        return model(self.batches[0][0])[1]

    def profile_target(self, variant: str = "slow") -> ProfileTarget:
        target = super().profile_target(variant)
        target.model = (self.slow if variant == "slow" else self.fast)["model"]
        target.inference_fn = lambda: self.inference(variant)
        return target

    def phase_times(self, variant: str, repeats: int = 3) -> dict[str, float]:
        """Median forward (loss), backward and inference ms, and the train/inference ratio,
        as seed 000 reports them (on a copy of the weights; no optimizer step)."""
        model = copy.deepcopy((self.slow if variant == "slow" else self.fast)["model"])
        batch = self.batches[0]
        fwd, bwd, inf = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            loss = (
                self.fast_loss(model, batch) if variant == "fast" else self.slow_loss(model, batch)
            )
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            with torch.no_grad():
                model(batch[0])
            t3 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            fwd.append(t1 - t0), bwd.append(t2 - t1), inf.append(t3 - t2)

        def med(xs):
            return 1000 * sorted(xs)[len(xs) // 2]

        out = {"forward_ms": med(fwd), "backward_ms": med(bwd), "inference_ms": med(inf)}
        out["train_inference_ratio"] = (out["forward_ms"] + out["backward_ms"]) / out[
            "inference_ms"
        ]
        out["backward_forward_ratio"] = out["backward_ms"] / out["forward_ms"]
        return out

    # -- equivalence ----------------------------------------------------------------------------
    def check_equivalence(self, rtol: float = 1e-5) -> EquivalenceReport:
        cfg = self.config
        report = EquivalenceReport(self.name)
        batch = self.batches[0]
        pool = 2 * cfg.batch_size * cfg.parts
        model = copy.deepcopy(self.init_model)
        slow = self.slow_loss(model, batch)
        exact = self.fast_loss(
            model,
            batch,
            top_m=pool,
            soc_metric=cfg.slow_soc_metric,
            refresh_every=1,
            matching="exact",
        )
        rel = float((slow - exact).detach().abs() / slow.detach().abs().clamp(min=1e-12))
        report.add(
            "fast (top_m = pool, t = 1, slow's SoC metric) loss == slow loss",
            rel <= rtol,
            rel,
            tolerance=rtol,
            detail="relative difference",
        )
        grads = []
        for loss in (slow, exact):
            model.zero_grad(set_to_none=True)
            loss.backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        grad_rel = float((grads[0] - grads[1]).norm() / grads[0].norm().clamp(min=1e-12))
        report.add("gradients of the same (relative norm of the difference)", None, grad_rel)
        with torch.no_grad():
            for name, kwargs in (
                (
                    f"top_m = {cfg.top_m} of {pool}",
                    {"top_m": cfg.top_m, "soc_metric": cfg.slow_soc_metric},
                ),
                (f"SoC {cfg.fast_soc_metric} instead of {cfg.slow_soc_metric}", {"top_m": pool}),
                ("fast defaults (all approximations)", {}),
            ):
                approx = self.fast_loss(model, batch, refresh_every=1, **kwargs)
                report.add(f"loss difference, {name}", None, float((approx - slow).abs()))
        report.add(
            f"loss difference after a step with matching cached for t = {cfg.refresh_every}",
            None,
            self._stale_cache_difference(),
        )
        return report

    def _stale_cache_difference(self) -> float:
        """Second-step loss with the cache refreshed every step vs every ``refresh_every``."""
        out = []
        for t in (1, max(2, self.config.refresh_every)):
            state = self._new_state()
            for step in range(2):
                batch = self.batches[step % len(self.batches)]
                loss = self.fast_loss(state["model"], batch, state, refresh_every=t)
                state["optimizer"].zero_grad(set_to_none=True)
                loss.backward()
                state["optimizer"].step()
                state["step"] += 1
            out.append(float(loss.detach()))
        return abs(out[0] - out[1])

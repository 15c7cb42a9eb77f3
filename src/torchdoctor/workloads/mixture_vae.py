"""Seed 002: a mixture-of-Gaussians VAE training loop whose metrics force host syncs.

Model: an MLP encoder to (mu, logvar), a learned mixture-of-Gaussians prior, an MLP decoder.
Loss: ELBO (reconstruction nll + beta * kl, beta warmed up linearly) plus a per-class
separability term (within-class spread of mu over the spread between class means), which
needs the batch's labels remapped to 0..n-1.

- slow: seed 002's "before": labels copied to the CPU, remapped with a Python dict, copied back;
  four metrics turned into Python floats with ``.item()`` every step.
- fast: labels remapped on the device without a host sync, metrics accumulated in
  :class:`torchdoctor.train.LazyMetrics` and read only every ``log_every`` steps.

Both variants compute bit-identical losses for the same seed (checked over 50 steps).

Example:
    >>> from torchdoctor.workloads import build
    >>> w = build("mixture_vae", scale="tiny")
    >>> w.check_equivalence(steps=5).equivalent
    True
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchdoctor.workloads.base import (
    EquivalenceReport,
    ProfileTarget,
    Workload,
    region,
    seeded_generator,
)
from torchdoctor.workloads.syncs import count_syncs


@dataclass
class MixtureVAEConfig:
    """The sizes and training settings of the mixture-VAE loop.

    Example:
        >>> MixtureVAEConfig(batch_size=32).input_dim
        64
    """

    batch_size: int = 256
    input_dim: int = 64
    hidden: int = 256
    latent: int = 16
    components: int = 6
    raw_labels: tuple[int, ...] = (3, 7, 11, 42, 100, 257)
    max_classes: int = 16  # static upper bound on classes in a batch (no host sync needed)
    batches: int = 8
    beta_warmup: int = 50
    separability_weight: float = 0.1
    log_every: int = 25
    # "device": sort-based remap, no host sync; "ops": torchdoctor.ops.remap_labels
    # (torch.unique with return_inverse: one host sync per step for its data-dependent size)
    fast_remap: str = "device"
    lr: float = 1e-3
    seed: int = 0


class MixtureVAEModel(nn.Module):
    """Encoder -> (mu, logvar); learned mixture prior; decoder. ``loss_terms`` gives the ELBO.

    Example:
        >>> m = MixtureVAEModel(8, 16, 2, 3)
        >>> x = torch.randn(4, 8); eps = torch.randn(4, 2)
        >>> len(m(x, eps))
        4
    """

    def __init__(self, input_dim: int, hidden: int, latent: int, components: int):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, input_dim)
        )
        self.prior_means = nn.Parameter(torch.randn(components, latent))
        self.prior_logvar = nn.Parameter(torch.zeros(components, latent))
        self.prior_logits = nn.Parameter(torch.zeros(components))

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        """Return (mu, z, recon nll per sample, kl per sample)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + eps * torch.exp(0.5 * logvar)
        recon = self.decoder(z)
        nll = 0.5 * (recon - x).pow(2).sum(-1)
        log_2pi = math.log(2 * math.pi)
        log_q = -0.5 * (log_2pi + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)
        diff = z.unsqueeze(1) - self.prior_means  # (B, C, latent)
        log_comp = -0.5 * (log_2pi + self.prior_logvar + diff.pow(2) / self.prior_logvar.exp()).sum(
            -1
        )
        log_p = torch.logsumexp(log_comp + torch.log_softmax(self.prior_logits, -1), dim=-1)
        return mu, z, nll, log_q - log_p


def separability(mu: torch.Tensor, labels: torch.Tensor, max_classes: int) -> torch.Tensor:
    """Within-class spread of ``mu`` over the mean squared distance between class means.

    ``labels`` are contiguous (0..n-1, n <= max_classes); empty class slots are masked, so the
    value does not depend on ``max_classes`` and needs no host sync.

    Example:
        >>> mu = torch.tensor([[0.0], [0.2], [4.0], [4.2]])
        >>> round(float(separability(mu, torch.tensor([0, 0, 1, 1]), 4)), 4)
        0.0006
    """
    # scatter, not F.one_hot: one_hot checks the label range with two host syncs
    onehot = mu.new_zeros(labels.shape[0], max_classes).scatter_(1, labels.unsqueeze(1), 1.0)
    counts = onehot.sum(0)
    means = onehot.t() @ mu / counts.clamp(min=1).unsqueeze(-1)
    within = (mu - means.index_select(0, labels)).pow(2).sum(-1).mean()
    present = (counts > 0).to(mu.dtype)
    pair_mask = present.unsqueeze(0) * present.unsqueeze(1)
    pair_mask = pair_mask * (1 - torch.eye(max_classes, dtype=mu.dtype, device=mu.device))
    dist = (means.unsqueeze(0) - means.unsqueeze(1)).pow(2).sum(-1)
    between = (dist * pair_mask).sum() / pair_mask.sum().clamp(min=1)
    return within / (between + 1e-6)


def remap_labels_on_host(labels: torch.Tensor) -> torch.Tensor:
    """Seed 002's "before": copy to the CPU, remap with a Python dict, copy back (syncs).

    Example:
        >>> remap_labels_on_host(torch.tensor([42, 3, 42, 7])).tolist()
        [2, 0, 2, 1]
    """
    y_cpu = labels.detach().to("cpu").numpy().astype(int)
    unique_labels = sorted(set(y_cpu.tolist()))
    label_map = {lab: i for i, lab in enumerate(unique_labels)}
    return torch.tensor([label_map[int(v)] for v in y_cpu], dtype=torch.long, device=labels.device)


def remap_labels_on_device(labels: torch.Tensor) -> torch.Tensor:
    """Contiguous labels (0..n-1 in sorted order of the values) with no host sync.

    Sort, mark where the value changes, cumulative-sum the marks, scatter back: the same result
    as ``torch.unique(labels, return_inverse=True)[1]`` without its data-dependent output shape.

    Example:
        >>> remap_labels_on_device(torch.tensor([42, 3, 42, 7])).tolist()
        [2, 0, 2, 1]
    """
    values, order = torch.sort(labels)
    new_value = torch.ones_like(values)
    new_value[1:] = (values[1:] != values[:-1]).to(values.dtype)
    ranks = torch.cumsum(new_value, 0) - 1
    return torch.empty_like(ranks).scatter_(0, order, ranks)


class MixtureVAE(Workload):
    """Seed 002 workload; see the module docstring.

    Example:
        >>> w = MixtureVAE(scale="tiny")
        >>> w.config.batch_size, w.kind
        (32, 'train')
    """

    name = "mixture_vae"
    seed_id = "002"
    summary = "mixture-VAE training loop: CPU label remap + .item() per metric vs none"
    kind = "train"
    demo_steps = 10
    Config = MixtureVAEConfig
    presets = {
        "tiny": {"batch_size": 32, "input_dim": 16, "hidden": 32, "latent": 4, "batches": 4},
        "cpu": {"input_dim": 32, "hidden": 128, "latent": 8},
        "seed": {"batch_size": 512, "input_dim": 784, "hidden": 512, "latent": 32},
    }

    def setup(self) -> None:
        cfg = self.config
        g = seeded_generator(cfg.seed)
        raw = torch.tensor(cfg.raw_labels)
        prototypes = 3.0 * torch.randn(len(raw), cfg.input_dim, generator=g)
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        for _ in range(cfg.batches):
            which = torch.randint(len(raw), (cfg.batch_size,), generator=g)
            x = prototypes[which] + torch.randn(cfg.batch_size, cfg.input_dim, generator=g)
            self.batches.append((x.to(self.device), raw[which].to(self.device)))
        torch.manual_seed(cfg.seed)
        self.init_model = MixtureVAEModel(cfg.input_dim, cfg.hidden, cfg.latent, cfg.components)
        self.init_model.to(self.device)
        self.slow = self._new_state()
        self.fast = self._new_state()
        self.model = self.slow["model"]

    def _new_state(self) -> dict[str, Any]:
        model = copy.deepcopy(self.init_model)
        return {
            "model": model,
            "optimizer": torch.optim.SGD(model.parameters(), lr=self.config.lr, momentum=0.9),
            "noise": seeded_generator(self.config.seed + 1, self.device),
            "step": 0,
            "history": [],
            "metrics": None,
        }

    def _loss(self, state: dict[str, Any], x: torch.Tensor, labels: torch.Tensor):
        cfg = self.config
        model = state["model"]
        eps = torch.randn(
            x.shape[0], cfg.latent, generator=state["noise"], device=x.device, dtype=x.dtype
        )
        mu, _, nll, kl = model(x, eps)
        beta = min(1.0, (state["step"] + 1) / cfg.beta_warmup)
        with region("separability"):
            sep = separability(mu, labels, cfg.max_classes)
        nll, kl = nll.mean(), kl.mean()
        loss = nll + beta * kl + cfg.separability_weight * sep
        return loss, nll, kl, sep, beta

    def _step(self, state: dict[str, Any], fast: bool) -> torch.Tensor:
        x, raw = self.batches[state["step"] % len(self.batches)]
        with region("label_remap"):
            labels = self._fast_remap(raw) if fast else remap_labels_on_host(raw)
        loss, nll, kl, sep, beta = self._loss(state, x, labels)
        opt = state["optimizer"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        with region("metrics"):
            if fast:
                self._lazy_update(state, loss, nll, kl, sep)
            else:  # seed 002's "before": a host sync per metric per step
                state["history"].append(
                    {
                        "loss": float(loss.detach().cpu().item()),
                        "nll": float(nll.detach().cpu().item()),
                        "kl": float(kl.detach().cpu().item()),
                        "separability": float(sep.detach().cpu().item()),
                        "beta": float(beta),
                    }
                )
        return loss.detach()

    def _fast_remap(self, raw: torch.Tensor) -> torch.Tensor:
        if self.config.fast_remap == "ops":
            from torchdoctor.ops import remap_labels

            return remap_labels(raw)[0]
        if self.config.fast_remap != "device":
            raise ValueError(
                f"fast_remap must be 'device' or 'ops', got {self.config.fast_remap!r}"
            )
        return remap_labels_on_device(raw)

    def _lazy_update(self, state, loss, nll, kl, sep) -> None:
        from torchdoctor.train.metrics import LazyMetrics

        if state["metrics"] is None:
            state["metrics"] = LazyMetrics(sync_every=self.config.log_every)
        metrics = state["metrics"]
        metrics.update(
            loss=loss.detach(), nll=nll.detach(), kl=kl.detach(), separability=sep.detach()
        )
        if state["step"] % self.config.log_every == 0:
            state["history"].append(metrics.compute())
            metrics.reset()

    def slow_step(self) -> torch.Tensor:
        return self._step(self.slow, fast=False)

    def fast_step(self) -> torch.Tensor:
        return self._step(self.fast, fast=True)

    def profile_target(self, variant: str = "slow") -> ProfileTarget:
        target = super().profile_target(variant)
        target.model = self.slow["model"] if variant == "slow" else self.fast["model"]
        return target

    def check_equivalence(self, steps: int = 50) -> EquivalenceReport:
        """Fresh copies of both variants from one seed: ``steps`` losses must be bit-identical;
        also reports host syncs per step of each (slow >= 4, fast 0 between log points)."""
        report = EquivalenceReport(self.name)
        slow, fast = self._new_state(), self._new_state()
        slow_losses = torch.stack([self._step(slow, fast=False) for _ in range(steps)])
        fast_losses = torch.stack([self._step(fast, fast=True) for _ in range(steps)])
        diff = float((slow_losses - fast_losses).abs().max())
        report.add(
            f"loss sequence over {steps} steps identical",
            bool(torch.equal(slow_losses, fast_losses)),
            diff,
            detail="max |slow - fast|",
        )
        self._add_sync_checks(report, slow, fast)
        return report

    def _add_sync_checks(self, report: EquivalenceReport, slow, fast) -> None:
        if fast["step"] % self.config.log_every == self.config.log_every - 1:
            self._step(fast, fast=True)  # the next step would be a log point: step past it
        slow_syncs = count_syncs(lambda: self._step(slow, fast=False))
        fast_syncs = count_syncs(lambda: self._step(fast, fast=True))
        report.add("host syncs per slow step >= 4", slow_syncs >= 4, float(slow_syncs))
        if self.config.fast_remap == "ops":  # torch.unique's output size costs one sync
            report.add(
                "host syncs per fast step (not a log step)",
                None,
                float(fast_syncs),
                detail="fast_remap='ops' uses torch.unique: one sync per step",
            )
        else:
            report.add(
                "host syncs per fast step (not a log step) == 0", fast_syncs == 0, float(fast_syncs)
            )

    def syncs_per_step(self) -> tuple[int, int]:
        """Host syncs of one slow step and one fast step that is not a log point."""
        if self.fast["step"] % self.config.log_every == self.config.log_every - 1:
            self.fast_step()
        return count_syncs(self.slow_step), count_syncs(self.fast_step)

"""The five seed systems as runnable workloads, each with a slow and a fast variant.

Modules are imported only when a workload is built, so listing them is cheap.

Example:
    >>> from torchdoctor.workloads import WORKLOADS, build
    >>> sorted(WORKLOADS)[0]
    'crossmodal_reid'
    >>> w = build("token_pruning", scale="tiny")
    >>> w.check_equivalence().equivalent
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from torchdoctor.workloads.base import EquivalenceCheck, EquivalenceReport, Workload

#: workload name -> (module, class, one-line summary). The only place workloads are registered.
WORKLOADS: dict[str, tuple[str, str, str]] = {
    "part_contrastive": (
        "torchdoctor.workloads.part_contrastive",
        "PartContrastive",
        "seed 000: part-aware contrastive re-ID training step (matching, Mahalanobis PaC, SoC)",
    ),
    "diffusion_policy": (
        "torchdoctor.workloads.diffusion_policy",
        "DiffusionPolicy",
        "seed 001: DiT trajectory planner sampling (DDPM 100 vs cached encoder + DDIM)",
    ),
    "mixture_vae": (
        "torchdoctor.workloads.mixture_vae",
        "MixtureVAE",
        "seed 002: mixture-VAE training loop (CPU label remap and .item() syncs vs none)",
    ),
    "token_pruning": (
        "torchdoctor.workloads.token_pruning",
        "TokenPruning",
        "seed 003: video token pruning by per-frame conditional DPP",
    ),
    "crossmodal_reid": (
        "torchdoctor.workloads.crossmodal_reid",
        "CrossModalReID",
        "seed 004: cross-modal re-ID training health (CE + SDM, sampler, memory, monitor)",
    ),
}


def workload_class(name: str) -> type[Workload]:
    """The Workload subclass registered as ``name``.

    Example:
        >>> workload_class("mixture_vae").seed_id
        '002'
    """
    if name not in WORKLOADS:
        raise ValueError(
            f"unknown workload {name!r}; known workloads: {', '.join(WORKLOADS)} "
            "(see `torchdoctor demo --list`)"
        )
    module_name, class_name, _ = WORKLOADS[name]
    return getattr(importlib.import_module(module_name), class_name)


def build(name: str, **config: Any) -> Workload:
    """Build workload ``name``; ``scale="tiny"|"cpu"|"seed"`` and config fields as keywords.

    Example:
        >>> build("mixture_vae", scale="tiny", batch_size=32).config.batch_size
        32
    """
    return workload_class(name)(**config)


__all__ = [
    "WORKLOADS",
    "EquivalenceCheck",
    "EquivalenceReport",
    "Workload",
    "build",
    "workload_class",
]

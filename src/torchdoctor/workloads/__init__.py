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

from torchdoctor.seeds import SEEDS
from torchdoctor.workloads.base import EquivalenceCheck, EquivalenceReport, Workload

#: workload name -> (module, class, one-line summary). The only place workloads are registered
#: (their names and summaries: the seeds they are, ``torchdoctor.seeds``).
_CLASSES = {"part_contrastive": "PartContrastive", "diffusion_policy": "DiffusionPolicy",
            "mixture_vae": "MixtureVAE", "token_pruning": "TokenPruning",
            "crossmodal_reid": "CrossModalReID"}  # fmt: skip
WORKLOADS: dict[str, tuple[str, str, str]] = {
    name: (f"torchdoctor.workloads.{name}", _CLASSES[name], f"seed {number}: {summary}")
    for number, (name, summary) in SEEDS.items()
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

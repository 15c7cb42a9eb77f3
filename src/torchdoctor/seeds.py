"""The five seed write-ups torchdoctor was built from, each a runnable worked case.

Advice cites a seed as ``"seed 001"`` (its references): the case where the same cause was found
by hand and cured. Each seed is a built-in workload, slow and fast side by side, that
``torchdoctor demo NAME`` profiles, fixes and checks; :func:`seed_reference` says so where a
report shows the reference. The workloads' registry (``torchdoctor.workloads.WORKLOADS``) takes
its names and summaries from here: one home.

Example:
    >>> seed_reference("seed 001")
    'seed 001 (`torchdoctor demo diffusion_policy`: DiT trajectory planner sampling, DDPM 100 vs cached encoder + DDIM)'
    >>> seed_reference("torch.compile")
    'torch.compile'
"""

from __future__ import annotations

#: seed number -> (its workload's name, one-line summary)
SEEDS: dict[str, tuple[str, str]] = {
    "000": ("part_contrastive",
            "part-aware contrastive re-ID training step (matching, Mahalanobis PaC, SoC)"),
    "001": ("diffusion_policy", "DiT trajectory planner sampling, DDPM 100 vs cached encoder + DDIM"),
    "002": ("mixture_vae", "mixture-VAE training loop (CPU label remap and .item() syncs vs none)"),
    "003": ("token_pruning", "video token pruning by per-frame conditional DPP"),
    "004": ("crossmodal_reid",
            "cross-modal re-ID training health (CE + SDM, sampler, memory, monitor)"),
}  # fmt: skip


def seed_reference(text: str) -> str:
    """``text`` as a report shows a reference: a seed (``"seed 001"``) with the command that
    runs its worked case and what it is; anything else as it is (see the module docstring).

    Example:
        >>> seed_reference("seed 004").split(":")[0]
        'seed 004 (`torchdoctor demo crossmodal_reid`'
    """
    number = text[5:] if text.startswith("seed ") else None
    if number not in SEEDS:
        return text
    name, summary = SEEDS[number]
    return f"{text} (`torchdoctor demo {name}`: {summary})"

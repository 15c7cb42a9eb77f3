"""The five seed write-ups torchdoctor was built from, each a runnable worked case.

Advice cites a seed as ``"seed 001"`` (its references): the case where the same cause was found
by hand and cured. Each seed is a built-in workload, slow and fast side by side, that
``torchdoctor demo NAME`` profiles, fixes and checks; :func:`seed_reference` says so where a
report shows the reference. The workloads' registry (``torchdoctor.workloads.WORKLOADS``) takes
its names and summaries from here: one home.

Example:
    >>> print(seed_reference("seed 002"))  # doctest: +ELLIPSIS
    seed 002 (`torchdoctor demo mixture_vae`: a VAE training loop that remaps labels on the CPU ...)
    >>> seed_reference("torch.compile")
    'torch.compile'
"""

from __future__ import annotations

#: seed number -> (its workload's name, one-line summary)
SEEDS: dict[str, tuple[str, str]] = {
    "000": ("part_contrastive", "a re-ID training step whose part matching runs on the CPU and "
            "whose Mahalanobis distances invert a covariance per image, slow and batched"),
    "001": ("diffusion_policy", "a diffusion planner's sampler that re-runs its encoder at every "
            "denoising step, slow and with the encoder cached"),
    "002": ("mixture_vae", "a VAE training loop that remaps labels on the CPU and reads "
            ".item() every step, slow and sync-free"),
    "003": ("token_pruning", "video token pruning with one torch.where per frame, slow and "
            "batched"),
    "004": ("crossmodal_reid", "a cross-modal re-ID training loop's data loading, sampler "
            "and memory, slow and fixed"),
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

"""Naive references for ``torchdoctor.train``: the "before" of seeds 002 and 004.

They are deliberately plain: used by tests (to check the fast parts against), benchmarks (as
the baseline) and the slow workload variants. Do not use them in a real training loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class EagerMetrics:
    """Metrics converted with ``.item()`` on every update: one host sync per value per step.

    Example:
        >>> import torch
        >>> metrics = EagerMetrics()
        >>> metrics.update(loss=torch.tensor(1.0))
        >>> metrics.update(loss=torch.tensor(3.0))
        >>> metrics.compute()
        {'loss': 2.0}
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all values."""
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def update(self, weight: float = 1.0, **values: float | torch.Tensor) -> None:
        """Add one weighted observation per name, converting each tensor with ``.item()``."""
        for name, value in values.items():
            number = value.item() if isinstance(value, torch.Tensor) else float(value)
            self.sums[name] = self.sums.get(name, 0.0) + number * weight
            self.counts[name] = self.counts.get(name, 0.0) + weight

    def compute(self) -> dict[str, float]:
        """Weighted means."""
        return {name: self.sums[name] / self.counts[name] for name in self.sums}


def sdm_loss_reference(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    pid: torch.Tensor,
    logit_scale: float,
    image_id: torch.Tensor | None = None,
    factor: float = 0.3,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """Similarity distribution matching written out step by step, for 2-D inputs only.

    A plain restatement of the formula of IRRA's ``compute_sdm`` (anosorae/IRRA,
    model/objectives.py), including its quirk of dividing the label matrix by the row sums
    broadcast along the last dimension (``labels / labels.sum(dim=1)``).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
        >>> float(sdm_loss_reference(a, b, torch.tensor([0, 0, 1, 1]), 50.0)) > 0
        True
    """
    n = image_features.shape[0]
    pid_column = pid.reshape(n, 1)
    same_person = (pid_column - pid_column.t() == 0).to(image_features.dtype)
    labels = same_person
    if image_id is not None:
        id_column = image_id.reshape(-1, 1)
        same_image = (id_column - id_column.t() == 0).to(image_features.dtype)
        labels = (same_person - same_image) * factor + same_image

    image_unit = image_features / image_features.norm(dim=1, keepdim=True)
    text_unit = text_features / text_features.norm(dim=1, keepdim=True)
    text_to_image = logit_scale * (text_unit @ image_unit.t())
    image_to_text = text_to_image.t()

    target = labels / labels.sum(dim=1)
    log_target = torch.log(target + epsilon)

    total = torch.zeros((), dtype=image_features.dtype, device=image_features.device)
    for scores in (image_to_text, text_to_image):
        per_row = []
        for i in range(n):  # one row at a time, on purpose
            p = torch.softmax(scores[i], dim=0)
            log_p = torch.log_softmax(scores[i], dim=0)
            per_row.append((p * (log_p - log_target[i])).sum())
        total = total + torch.stack(per_row).mean()
    return total


def naive_pk_batches(
    labels: Sequence[int], p: int, k: int, *, seed: int = 0, epoch: int = 0
) -> list[list[int]]:
    """Plain P x K batches: P shuffled identities, K random samples each, no modality awareness.

    Identities with fewer than K samples are drawn with replacement. The "before" of the
    modality-aware sampler: it ignores which modality a sample has, so an identity may land in
    a batch with no cross-modal positive.

    Example:
        >>> batches = naive_pk_batches([0, 0, 1, 1, 2, 2], p=2, k=2)
        >>> len(batches), len(batches[0])
        (1, 4)
    """
    labels_array = np.asarray(labels)
    rng = np.random.default_rng([seed, epoch])
    identities = np.unique(labels_array)
    rng.shuffle(identities)
    batches = []
    for start in range(0, len(identities) - p + 1, p):
        batch: list[int] = []
        for identity in identities[start : start + p]:
            pool = np.flatnonzero(labels_array == identity)
            chosen = rng.choice(pool, size=k, replace=len(pool) < k)
            batch.extend(int(i) for i in chosen)
        batches.append(batch)
    return batches

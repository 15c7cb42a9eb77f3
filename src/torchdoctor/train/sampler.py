"""Modality-aware P x K batch sampler for cross-modal re-identification (seed 004).

Each batch holds P identities with K samples each. For cross-modal losses (SDM between RGB
and IR/sketch/text features) a row is useless when its identity has no sample of the other
side in the batch: "pair coverage" is the share of rows that do. This sampler draws, for each
identity, K samples that contain at least one anchor-modality and one other-modality sample
whenever the identity has both, and reports the coverage and fallbacks of every batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

_FALLBACKS = ("plain", "error")


@dataclass(frozen=True)
class BatchReport:
    """What the sampler did for one batch.

    ``coverage``: share of rows with a cross-modal positive in the batch (1 - rows without one).
    ``fallbacks``: identities drawn as K plain samples because they lack a modality.
    ``forced``: identities whose random draws missed a pair ``retries`` times, completed by
    swapping one sample for one of the missing side. ``retries``: extra draws used.
    ``replacement``: identities with fewer than K samples, drawn with replacement.

    Example:
        >>> sampler = ModalityAwarePKSampler([0, 0, 1, 1], ["rgb", "ir", "rgb", "rgb"], p=2, k=2)
        >>> _ = list(sampler)
        >>> sampler.reports[0].coverage, sampler.reports[0].fallbacks
        (0.5, 1)
    """

    coverage: float
    fallbacks: int
    forced: int
    retries: int
    replacement: int


def pair_coverage(
    labels: torch.Tensor, is_anchor: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Share of rows that have a same-label row on the other side (anchor vs. non-anchor).

    Sync-free (returns a 0-d tensor), for logging the coverage a batch actually had.

    Example:
        >>> import torch
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> is_rgb = torch.tensor([True, False, True, True])
        >>> float(pair_coverage(labels, is_rgb))
        0.5
    """
    same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
    other_side = is_anchor.unsqueeze(-1) != is_anchor.unsqueeze(-2)
    pairs = same & other_side
    if valid is not None:
        pairs = pairs & valid.unsqueeze(-2) & valid.unsqueeze(-1)
        covered = pairs.any(dim=-1).sum(dim=-1)
        return covered.to(torch.float32) / valid.sum(dim=-1).clamp_min(1).to(torch.float32)
    return pairs.any(dim=-1).to(torch.float32).mean(dim=-1)


class ModalityAwarePKSampler(torch.utils.data.Sampler[list[int]]):
    """P identities x K samples per batch, each identity with both modality sides if it can.

    Use as ``DataLoader(dataset, batch_sampler=sampler)``; call :meth:`set_epoch` each epoch.
    Identities are shuffled per ``(seed, epoch)`` and cut into groups of ``p`` (the incomplete
    last group is dropped), so every identity appears at most once per epoch; with
    ``num_replicas > 1`` the batches are dealt round-robin to ranks, which all get the same
    number. For each identity, K samples are drawn at random (without replacement unless it has
    fewer than K); with ``require_pair`` a draw lacking an anchor-modality or an other-modality
    sample is redrawn up to ``retries`` times, then completed by swapping one sample. An
    identity that has only one side falls back to K plain samples (``fallback="plain"``) or,
    with ``fallback="error"``, the constructor refuses the dataset.

    :meth:`plan` returns the epoch's batches with a :class:`BatchReport` each;
    ``sampler.reports`` holds those of the current epoch (index them by the batch number; a
    DataLoader with workers draws batches ahead of the training loop).

    Example:
        >>> labels = [0, 0, 0, 1, 1, 1, 2, 2]
        >>> modalities = ["rgb", "ir", "ir", "rgb", "sketch", "rgb", "ir", "ir"]
        >>> sampler = ModalityAwarePKSampler(labels, modalities, p=3, k=2, seed=0)
        >>> batches = list(sampler)
        >>> len(batches), len(batches[0])
        (1, 6)
        >>> report = sampler.reports[0]
        >>> round(report.coverage, 3), report.fallbacks
        (0.667, 1)
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        modalities: Sequence[str | int] | np.ndarray | torch.Tensor,
        p: int,
        k: int,
        anchor_modality: str | int = "rgb",
        require_pair: bool = True,
        retries: int = 3,
        fallback: str = "plain",
        seed: int = 0,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        labels_array = _as_array(labels, "labels")
        modality_array = _as_array(modalities, "modalities")
        if labels_array.shape != modality_array.shape or labels_array.ndim != 1:
            raise ValueError(
                f"labels and modalities must be 1-D and of the same length; got "
                f"{labels_array.shape} and {modality_array.shape}"
            )
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        if require_pair and k < 2:
            raise ValueError("require_pair needs k >= 2 (one anchor and one other sample)")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if fallback not in _FALLBACKS:
            raise ValueError(f"fallback must be one of {_FALLBACKS}, got {fallback!r}")
        num_replicas, rank = _replicas(num_replicas, rank)

        self.p, self.k = p, k
        self.anchor_modality = anchor_modality
        self.require_pair = require_pair
        self.retries = retries
        self.fallback = fallback
        self.seed = seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._is_anchor = modality_array == anchor_modality
        if require_pair and modality_array.size and not self._is_anchor.any():
            present = np.unique(modality_array)[:10].tolist()
            raise ValueError(
                f"anchor_modality={anchor_modality!r} never occurs in modalities (values: "
                f"{present}); pass the anchor's value, e.g. anchor_modality={present[0]!r}"
            )
        self._labels = labels_array

        identities, inverse = np.unique(labels_array, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(identities)))[:-1]
        self._pools = np.split(order, bounds)  # sample indices of each identity
        self._identities = identities
        self._pairable = np.array(
            [self._is_anchor[pool].any() and (~self._is_anchor[pool]).any() for pool in self._pools]
        )
        if require_pair and fallback == "error" and not self._pairable.all():
            missing = identities[~self._pairable][:10].tolist()
            raise ValueError(
                f"{int((~self._pairable).sum())} identities lack an anchor ({anchor_modality!r}) "
                f"or a non-anchor sample, e.g. {missing}; use fallback='plain' or drop them"
            )
        total = len(identities) // p
        if total // num_replicas == 0:
            raise ValueError(
                f"{len(identities)} identities make {total} batches of p={p}, fewer than "
                f"num_replicas={num_replicas}; lower p or use fewer ranks"
            )
        self.reports: list[BatchReport] = []

    @property
    def achievable_coverage(self) -> float:
        """The share of identities that can be paired: the best mean coverage possible."""
        return float(self._pairable.mean())

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch`` (call before each epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self._identities) // self.p) // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        batches, self.reports = self.plan(self.epoch)
        yield from batches

    def plan(self, epoch: int) -> tuple[list[list[int]], list[BatchReport]]:
        """This rank's batches of ``epoch`` and what was done for each; deterministic."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self._identities))
        per_rank = len(self)
        batches, reports = [], []
        for index in range(per_rank * self.num_replicas):
            group = order[index * self.p : (index + 1) * self.p]
            batch_rng = np.random.default_rng([self.seed, epoch, index])
            batch, report = self._batch(group, batch_rng)
            if index % self.num_replicas == self.rank:
                batches.append(batch)
                reports.append(report)
        return batches, reports

    def _batch(self, group: np.ndarray, rng: np.random.Generator) -> tuple[list[int], BatchReport]:
        batch: list[int] = []
        fallbacks = forced = retries = replacement = covered = 0
        for identity in group:
            pool = self._pools[identity]
            replace = len(pool) < self.k
            replacement += int(replace)
            chosen = rng.choice(pool, size=self.k, replace=replace)
            if self.require_pair:
                if not self._pairable[identity]:
                    fallbacks += 1
                else:
                    attempt = 0
                    while not self._has_pair(chosen) and attempt < self.retries:
                        chosen = rng.choice(pool, size=self.k, replace=replace)
                        attempt += 1
                    retries += attempt
                    if not self._has_pair(chosen):
                        chosen = self._force_pair(chosen, pool, rng)
                        forced += 1
            covered += self._covered_rows(chosen)
            batch.extend(int(i) for i in chosen)
        report = BatchReport(covered / len(batch), fallbacks, forced, retries, replacement)
        return batch, report

    def _has_pair(self, chosen: np.ndarray) -> bool:
        sides = self._is_anchor[chosen]
        return bool(sides.any() and not sides.all())

    def _covered_rows(self, chosen: np.ndarray) -> int:
        return len(chosen) if self._has_pair(chosen) else 0

    def _force_pair(
        self, chosen: np.ndarray, pool: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Swap one random slot for a sample of the side the draw lacks."""
        lacking_anchor = not self._is_anchor[chosen].any()
        candidates = pool[self._is_anchor[pool] == lacking_anchor]
        unused = np.setdiff1d(candidates, chosen)
        source = unused if len(unused) else candidates
        chosen = chosen.copy()
        chosen[rng.integers(len(chosen))] = rng.choice(source)
        return chosen

    def summary(self) -> str:
        """One line on the current epoch's reports (mean/min coverage, fallbacks, forced)."""
        if not self.reports:
            return "sampler: no batches drawn yet"
        coverage = [r.coverage for r in self.reports]
        return (
            f"sampler: {len(self.reports)} batches, coverage mean {np.mean(coverage):.3f} min "
            f"{min(coverage):.3f} (achievable {self.achievable_coverage:.3f}), fallbacks "
            f"{sum(r.fallbacks for r in self.reports)}, forced {sum(r.forced for r in self.reports)}"
        )


def _as_array(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise TypeError(f"{name} must be ints or strings, not mixed objects")
    return array


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if distributed else 1
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(
            f"rank must be in [0, num_replicas); got rank={rank}, num_replicas={num_replicas}"
        )
    return num_replicas, rank

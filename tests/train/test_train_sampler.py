"""ModalityAwarePKSampler invariants on synthetic datasets with missing modalities."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from torchdoctor.train import ModalityAwarePKSampler, pair_coverage
from torchdoctor.train.reference import naive_pk_batches

OTHERS = ["ir", "cp", "sketch", "text"]


def _dataset(ids: int = 48, seed: int = 0, unpairable: float = 0.08, rgb_share: float = 0.25):
    """Identities with 1-12 samples; a few have no RGB at all, RGB is a minority elsewhere."""
    rng = np.random.default_rng(seed)
    labels, modalities = [], []
    for identity in range(ids):
        n = int(rng.integers(1, 13)) if identity % 7 else int(rng.integers(1, 3))  # tiny ones
        no_rgb = rng.random() < unpairable
        for j in range(n):  # the first two samples of a pairable identity: one RGB, one not
            rgb = not no_rgb and (j == 0 or (j > 1 and rng.random() < rgb_share))
            labels.append(identity * 3)  # non-contiguous labels, including 0
            modalities.append("rgb" if rgb else OTHERS[int(rng.integers(len(OTHERS)))])
    return labels, modalities


def _batch_coverage(batch, labels, modalities) -> float:
    y = torch.tensor([labels[i] for i in batch])
    rgb = torch.tensor([modalities[i] == "rgb" for i in batch])
    return float(pair_coverage(y, rgb))


def test_batches_have_p_identities_k_samples_and_pairs_where_possible():
    labels, modalities = _dataset()
    sampler = ModalityAwarePKSampler(labels, modalities, p=8, k=4, seed=1)
    pools = Counter(labels)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(set(labels)) // 8
    seen = set()
    for batch, report in zip(batches, sampler.reports):
        per_identity = Counter(labels[i] for i in batch)
        assert len(per_identity) == 8 and set(per_identity.values()) == {4}
        assert not seen & set(per_identity)  # each identity at most once per epoch
        seen |= set(per_identity)
        fallbacks = 0
        for identity in per_identity:
            rows = [i for i in batch if labels[i] == identity]
            if pools[identity] >= 4:  # replacement only for identities with fewer than K
                assert len(set(rows)) == 4
            sides = {modalities[i] == "rgb" for i in rows}
            has_both = {True, False} <= {
                modalities[i] == "rgb" for i in range(len(labels)) if labels[i] == identity
            }
            if has_both:
                assert sides == {True, False}
            else:
                fallbacks += 1
        assert report.fallbacks == fallbacks
        assert report.replacement == sum(pools[i] < 4 for i in per_identity)
        assert report.coverage == pytest.approx(_batch_coverage(batch, labels, modalities))


def test_coverage_reaches_target_where_achievable_and_beats_the_naive_sampler():
    labels, modalities = _dataset(ids=64, seed=3, unpairable=0.04)
    sampler = ModalityAwarePKSampler(labels, modalities, p=8, k=4, seed=0)
    assert sampler.achievable_coverage >= 0.85
    coverage, naive = [], []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        list(sampler)
        coverage += [r.coverage for r in sampler.reports]
        naive += [
            _batch_coverage(b, labels, modalities)
            for b in naive_pk_batches(labels, 8, 4, epoch=epoch)
        ]
    assert np.mean(coverage) >= 0.85
    assert np.mean(coverage) > np.mean(naive) + 0.1
    assert "coverage mean" in sampler.summary()


def test_retries_then_forced_pairs_are_counted():
    # one RGB among many IR: random draws of K=2 miss it most of the time
    labels = [0] * 20 + [1] * 20
    modalities = (["rgb"] + ["ir"] * 19) * 2
    no_retry = ModalityAwarePKSampler(labels, modalities, p=2, k=2, retries=0, seed=0)
    list(no_retry)
    assert no_retry.reports[0].forced >= 1 and no_retry.reports[0].retries == 0
    assert no_retry.reports[0].coverage == 1.0
    many = ModalityAwarePKSampler(labels, modalities, p=2, k=2, retries=200, seed=0)
    list(many)
    assert many.reports[0].retries > 0 and many.reports[0].forced == 0


def test_deterministic_per_seed_and_epoch():
    labels, modalities = _dataset()
    a = ModalityAwarePKSampler(labels, modalities, p=6, k=4, seed=5)
    b = ModalityAwarePKSampler(labels, modalities, p=6, k=4, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(ModalityAwarePKSampler(labels, modalities, p=6, k=4, seed=6)) != first


def test_sharding_deals_the_single_process_batches_to_ranks():
    labels, modalities = _dataset(ids=50)
    single = ModalityAwarePKSampler(labels, modalities, p=4, k=4, seed=2)
    shards = [
        ModalityAwarePKSampler(labels, modalities, p=4, k=4, seed=2, num_replicas=3, rank=r)
        for r in range(3)
    ]
    for shard in shards:
        shard.set_epoch(4)
    single.set_epoch(4)
    everything = list(single)
    lengths = {len(shard) for shard in shards}
    assert lengths == {len(everything) // 3}
    for rank, shard in enumerate(shards):
        assert list(shard) == everything[rank::3][: len(shard)]


def test_usable_as_dataloader_batch_sampler():
    labels, modalities = _dataset(ids=16)
    dataset = torch.utils.data.TensorDataset(torch.arange(len(labels)), torch.tensor(labels))
    sampler = ModalityAwarePKSampler(labels, modalities, p=4, k=2, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    got = [index.tolist() for index, _ in loader]
    assert got == sampler.plan(0)[0]
    assert len(loader) == len(sampler)


def test_invalid_arguments_are_explained():
    labels, modalities = _dataset(ids=10, unpairable=0.5)
    with pytest.raises(ValueError, match="fallback='plain'"):
        ModalityAwarePKSampler(labels, modalities, p=2, k=2, fallback="error")
    with pytest.raises(ValueError, match="same length"):
        ModalityAwarePKSampler(labels, modalities[:-1], p=2, k=2)
    with pytest.raises(ValueError, match="fewer than num_replicas"):
        ModalityAwarePKSampler(labels, modalities, p=8, k=2, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="k >= 2"):
        ModalityAwarePKSampler(labels, modalities, p=2, k=1)


def test_pair_coverage_with_valid_mask():
    labels = torch.tensor([0, 0, 1, 1, 2])
    rgb = torch.tensor([True, False, True, False, True])
    valid = torch.tensor([True, True, True, False, True])
    assert float(pair_coverage(labels, rgb)) == pytest.approx(4 / 5)
    assert float(pair_coverage(labels, rgb, valid)) == pytest.approx(2 / 4)


def test_an_anchor_modality_that_never_occurs_is_an_error():
    labels, modalities = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"anchor_modality='rgb' never occurs .* \[0, 1\]"):
        ModalityAwarePKSampler(labels, modalities, p=2, k=2)
    sampler = ModalityAwarePKSampler(labels, modalities, p=2, k=2, anchor_modality=0)
    assert sorted(i for batch in sampler for i in batch) == [0, 1, 2, 3]

"""CrossBatchMemory: contents before full, after wrap-around, with label 0, and sync-free."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.testing import count_host_syncs
from torchdoctor.train import CrossBatchMemory, sdm_loss


def _rows(start: int, n: int, dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.arange(start, start + n)
    return ids[:, None].float().expand(n, dim).clone(), ids


def _as_set(gallery) -> set[tuple[float, int]]:
    return {(f[0], lab) for f, lab in zip(gallery.features.tolist(), gallery.labels.tolist())}


def test_before_full_returns_exactly_the_enqueued_rows_including_label_zero():
    memory = CrossBatchMemory(size=10, dim=3)
    assert len(memory.gallery().labels) == 0
    features, labels = _rows(0, 4)  # labels 0..3: label 0 is a real class
    memory.enqueue(features, labels)
    assert _as_set(memory.gallery()) == {(float(i), i) for i in range(4)}


def test_contents_after_wrap_around_are_the_newest_rows():
    memory = CrossBatchMemory(size=5, dim=3)
    for start in range(0, 12, 3):  # 12 rows in 4 steps through a 5-row buffer
        memory.enqueue(*_rows(start, 3))
    assert memory.count == 5 and memory.enqueued == 12
    assert _as_set(memory.gallery()) == {(float(i), i) for i in range(7, 12)}


def test_batch_larger_than_the_buffer_keeps_its_newest_rows():
    memory = CrossBatchMemory(size=4, dim=3)
    memory.enqueue(*_rows(0, 3))
    memory.enqueue(*_rows(100, 9))
    assert _as_set(memory.gallery()) == {(float(i), i) for i in range(105, 109)}
    memory.enqueue(*_rows(200, 1))
    assert _as_set(memory.gallery()) == {(float(i), i) for i in (106, 107, 108, 200)}


def test_modalities_by_name_compact_and_masked():
    memory = CrossBatchMemory(size=6, dim=3, modality_names=["rgb", "ir"])
    memory.enqueue(*_rows(0, 2), modalities="rgb")
    memory.enqueue(*_rows(2, 2), modalities="ir")
    memory.enqueue(*_rows(4, 2), modalities=torch.tensor([0, 1]))
    rgb = memory.gallery("rgb")
    assert sorted(rgb.labels.tolist()) == [0, 1, 4]
    masked = memory.gallery("rgb", compact=False)
    assert sorted(masked.labels[masked.mask].tolist()) == [0, 1, 4]
    with pytest.raises(ValueError, match="unknown modality"):
        memory.gallery("sketch")


def test_enqueue_and_masked_gallery_do_not_sync_and_are_detached():
    memory = CrossBatchMemory(size=8, dim=4)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(6, 4, generator=g, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    with count_host_syncs() as syncs:
        for _ in range(3):
            memory.enqueue(features * 2, labels, modalities=torch.tensor([0, 1] * 3))
        gallery = memory.gallery(0, compact=False)
        loss = sdm_loss(
            features,
            features + 0.1,
            labels,
            gallery_feats=gallery.features,
            gallery_labels=gallery.labels,
            gallery_mask=gallery.mask,
        )
    assert syncs.count == 0
    assert not memory.features.requires_grad
    assert torch.isfinite(loss)


def test_bad_inputs_are_explained():
    memory = CrossBatchMemory(size=4, dim=3)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        memory.enqueue(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="one per feature row"):
        memory.enqueue(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


def test_empty_memory_as_gallery_equals_no_gallery():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    labels = torch.tensor([0, 0, 1, 1])
    memory = CrossBatchMemory(size=5, dim=8, modality_names=["rgb"])
    plain = sdm_loss(a, b, labels)
    empty = memory.gallery()
    masked = memory.gallery("rgb", compact=False)
    torch.testing.assert_close(
        sdm_loss(a, b, labels, gallery_feats=empty.features, gallery_labels=empty.labels), plain
    )
    torch.testing.assert_close(
        sdm_loss(
            a,
            b,
            labels,
            gallery_feats=masked.features,
            gallery_labels=masked.labels,
            gallery_mask=masked.mask,
        ),
        plain,
    )

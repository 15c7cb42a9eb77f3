"""sdm_loss: equal to a plain rewrite of IRRA's compute_sdm, batched, with properties."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.testing import count_host_syncs
from torchdoctor.train import sdm_loss
from torchdoctor.train.reference import sdm_loss_reference


def _inputs(n: int, d: int, ids: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, ids, (n,), generator=g)
    return a, b, labels, g


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_on_random_inputs(seed):
    a, b, labels, g = _inputs(12, 16, 4, seed)
    scale = [50.0, 10.0, 1.0][seed % 3]
    got = sdm_loss(a, b, labels, logit_scale=scale)
    want = sdm_loss_reference(a, b, labels, scale)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_with_image_id_soft_labels(seed):
    a, b, labels, g = _inputs(10, 8, 3, seed)
    image_ids = labels * 10 + torch.randint(0, 3, (10,), generator=g)  # images nest in ids
    got = sdm_loss(a, b, labels, image_ids=image_ids, factor=0.3)
    want = sdm_loss_reference(a, b, labels, 50.0, image_id=image_ids, factor=0.3)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_batched_over_leading_dims_equals_per_item():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(2, 3, 8, 5, generator=g)
    b = torch.randn(2, 3, 8, 5, generator=g)
    labels = torch.randint(0, 3, (2, 3, 8), generator=g)
    got = sdm_loss(a, b, labels)
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(got[i, j], sdm_loss(a[i, j], b[i, j], labels[i, j]))


def test_non_negative_and_zero_sync():
    for seed in range(5):
        a, b, labels, _ = _inputs(9, 6, 3, seed)
        with count_host_syncs() as syncs:
            loss = sdm_loss(a, b, labels)
        assert syncs.count == 0
        assert float(loss) >= -1e-6  # a sum of KL divergences, up to eps


def test_decreases_when_matching_pairs_move_closer():
    a, b, labels, g = _inputs(12, 16, 4, 11)
    centers = torch.randn(4, 16, generator=g, dtype=torch.float64) * 3
    before = sdm_loss(a, b, labels, logit_scale=10.0)
    a_closer = 0.5 * a + 0.5 * centers[labels]
    b_closer = 0.5 * b + 0.5 * centers[labels]
    after = sdm_loss(a_closer, b_closer, labels, logit_scale=10.0)
    assert float(after) < float(before)


def test_gradient_flows_and_dtype_is_preserved():
    a, b, labels, _ = _inputs(6, 4, 2, 3)
    a32 = a.float().requires_grad_()
    loss = sdm_loss(a32, b.float(), labels)
    loss.backward()
    assert loss.dtype == torch.float32
    assert a32.grad is not None and torch.isfinite(a32.grad).all()


def test_gallery_extends_the_a_to_b_direction():
    a, b, labels, g = _inputs(6, 8, 3, 5)
    gallery = torch.randn(4, 8, generator=g, dtype=torch.float64)
    gallery_labels = torch.tensor([0, 1, 7, 7])
    loss = sdm_loss(a, b, labels, gallery_feats=gallery, gallery_labels=gallery_labels)
    # same thing computed by hand: a -> [b; gallery] rows normalized, plus b -> a
    a_unit = a / a.norm(dim=1, keepdim=True)
    cols = torch.cat([b, gallery])
    cols = cols / cols.norm(dim=1, keepdim=True)
    all_labels = torch.cat([labels, gallery_labels])
    same = (labels[:, None] == all_labels[None, :]).double()
    target = same / same.sum(1, keepdim=True)
    s = 50.0 * a_unit @ cols.t()
    kl = (s.softmax(1) * (s.log_softmax(1) - torch.log(target + 1e-8))).sum(1).mean()
    b_unit = b / b.norm(dim=1, keepdim=True)
    s2 = 50.0 * b_unit @ a_unit.t()
    same2 = (labels[:, None] == labels[None, :]).double()
    t2 = same2 / same2.sum(1, keepdim=True)
    kl2 = (s2.softmax(1) * (s2.log_softmax(1) - torch.log(t2 + 1e-8))).sum(1).mean()
    torch.testing.assert_close(loss, kl + kl2)


def test_gallery_mask_equals_dropping_the_masked_rows():
    a, b, labels, g = _inputs(6, 8, 3, 9)
    gallery = torch.randn(5, 8, generator=g, dtype=torch.float64)
    gallery_labels = torch.tensor([0, 1, 2, 0, 1])
    mask = torch.tensor([True, False, True, True, False])
    masked = sdm_loss(
        a, b, labels, gallery_feats=gallery, gallery_labels=gallery_labels, gallery_mask=mask
    )
    dropped = sdm_loss(
        a, b, labels, gallery_feats=gallery[mask], gallery_labels=gallery_labels[mask]
    )
    torch.testing.assert_close(masked, dropped)


def test_bad_shapes_are_explained():
    a, b, labels, _ = _inputs(6, 8, 3, 0)
    with pytest.raises(ValueError, match="same shape"):
        sdm_loss(a, b[:5], labels)
    with pytest.raises(ValueError, match="one labels entry per row"):
        sdm_loss(a, b, labels[:4])
    with pytest.raises(TypeError, match="floating point"):
        sdm_loss(a.long(), b.long(), labels)
    with pytest.raises(ValueError, match="image_ids cannot be combined"):
        sdm_loss(a, b, labels, image_ids=labels, gallery_feats=a, gallery_labels=labels)


def test_half_precision_is_computed_in_float32_and_irra_argument_order_works():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    labels, image_ids = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 2, 3, 4])
    full = sdm_loss(a.half().float(), b.half().float(), labels)
    half = sdm_loss(a.half(), b.half(), labels)  # eps rounds to 0 in float16: was NaN
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(half, full)
    # IRRA's compute_sdm(a, b, labels, logit_scale, image_ids, factor, eps), positionally
    positional = sdm_loss(a, b, labels, 50.0, image_ids, 0.3, 1e-8)
    keyword = sdm_loss(a, b, labels, logit_scale=50.0, image_ids=image_ids, factor=0.3)
    torch.testing.assert_close(positional, keyword)
    with pytest.raises(TypeError, match="eps must be a Python number"):
        sdm_loss(a, b, labels, 50.0, None, 0.3, torch.tensor(1e-8))

"""select_tokens_per_segment: unusual ids and arguments, the same on every engine."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.ops.dpp import numba_available
from torchdoctor.ops.reference.tokens import select_tokens_reference
from torchdoctor.ops.tokens import select_tokens_per_segment

NEEDS_NUMBA = pytest.mark.skipif(not numba_available(), reason="numba is not installed")
BACKENDS = [pytest.param("numba", marks=NEEDS_NUMBA), "numpy", "torch", "auto"]
BIG = torch.iinfo(torch.long).max


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_largest_int64_id_is_a_segment_like_any_other(backend):
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ids = torch.tensor([0, 0, BIG, BIG, -1, 0])
    got = select_tokens_per_segment(features, ids, keep_per_segment=1, backend=backend)
    want = select_tokens_reference(features, ids, keep_per_segment=1)
    assert got.tolist() == want.tolist()
    assert len(got) == 3 and 4 in got.tolist() and ({2, 3} & set(got.tolist()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [-1.0, float("nan"), float("inf")])
def test_eps_is_checked_as_dpp_greedy_checks_it(backend, eps):
    features = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"eps must be finite and >= 0, got"):
        select_tokens_per_segment(features, ids, keep_per_segment=3, eps=eps, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zero_dim_tensor_keep_ratio_works_on_every_engine(backend):
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([0, 0, 1, 1, -1, 1])
    want = select_tokens_per_segment(features, ids, keep_ratio=0.5, backend=backend)
    got = select_tokens_per_segment(features, ids, keep_ratio=torch.tensor(0.5), backend=backend)
    assert got.tolist() == want.tolist()
    with pytest.raises(ValueError, match=r"keep_ratio must be in \[0, 1\], got 1.5"):
        select_tokens_per_segment(features, ids, keep_ratio=torch.tensor(1.5), backend=backend)


@pytest.mark.parametrize("method", ["dpp", "greedy_cosine", "topk"])
def test_the_reference_follows_the_nan_quality_rule(method):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(14, 5, generator=generator, dtype=torch.float64)
    quality = torch.rand(14, generator=generator, dtype=torch.float64)
    quality[2] = float("nan")  # segment 0: the quota (2 of 4) is met without it
    quality[[9, 10, 11]] = float("nan")  # segment 2: the quota needs one NaN token
    ids = torch.tensor([-1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, -1])
    ref = select_tokens_reference(features, ids, keep_per_segment=2, quality=quality, method=method)
    fast = select_tokens_per_segment(features, ids, keep_per_segment=2, quality=quality, method=method)
    assert ref.tolist() == fast.tolist()
    assert 2 not in ref.tolist() and 12 in ref.tolist() and 9 in ref.tolist()  # 9: first NaN


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_quality_with_float32_features_is_ranked_unrounded_on_every_engine(backend):
    # The host engines rounded quality to the features' float32 first: scores of 1e-300..1e-100
    # all became 0 (selection by position) and 1e300 became inf; 1 + 1e-12 tied with 1 in the
    # fill. Quality is ranked in its own dtype, scale-free, as by the torch engine.
    features = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(6, dtype=torch.long)
    scores = torch.tensor([1.0, 10.0, 100.0, 1.0, 50.0, 1e-200], dtype=torch.float64)
    for scale in (1e-298, 1.0, 1e298):
        got = select_tokens_per_segment(features, ids, keep_per_segment=3,
                                        quality=scores * scale, backend=backend)
        want = select_tokens_per_segment(features.double(), ids, keep_per_segment=3,
                                         quality=scores, backend="torch")
        assert got.tolist() == want.tolist()
    same = torch.zeros(4, 3)
    same[:, 0] = 1.0  # rank 1: one DPP pick (ties: position 0), then the fill by quality
    quality = torch.tensor([1.0, 1.0 + 1e-12, 1.0 + 2e-12, 0.5], dtype=torch.float64)
    got = select_tokens_per_segment(same, ids[:4], keep_per_segment=2, quality=quality,
                                    backend=backend)
    assert got.tolist() == [0, 2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_positive_keep_ratio_keeps_a_token_and_rounding_adds_none(backend):
    """keep_ratio=1e-10 of 10 tokens kept 0 (``ceil(x - 1e-9)``), not ceil's 1; 0.3 of 10 is
    3.0000000000000004 in floating point and keeps 3, not 4 (oracle round 5)."""
    features = torch.randn(10, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ids = torch.zeros(10, dtype=torch.long)
    for ratio, kept in ((1e-10, 1), (0.3, 3), (0.7, 7), (0.0, 0)):
        got = select_tokens_per_segment(features, ids, keep_ratio=ratio, backend=backend)
        assert len(got) == kept, ratio

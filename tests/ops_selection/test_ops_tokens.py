"""select_tokens_per_segment: seed 003's per-frame pruning, batched over frames."""

from __future__ import annotations

import math

import pytest
import torch

from torchdoctor.ops.dpp import numba_available
from torchdoctor.ops.reference.tokens import select_tokens_reference
from torchdoctor.ops.tokens import select_tokens_per_segment, tokens_to_keep
from torchdoctor.testing import count_host_syncs


def _sequence(seed: int, d: int = 24, dtype=torch.float64):
    """Frames of uneven length (one id skipped: an empty segment), text tokens interleaved."""
    generator = torch.Generator().manual_seed(seed)
    lengths = {0: 17, 1: 9, 3: 30, 4: 1}  # id 2 has no tokens
    ids = torch.cat([torch.full((count,), seg) for seg, count in lengths.items()])
    ids = torch.cat([ids, torch.full((6,), -1)])
    ids = ids[torch.randperm(len(ids), generator=generator)]
    features = torch.randn(len(ids), d, generator=generator, dtype=dtype)
    quality = torch.rand(len(ids), generator=generator, dtype=dtype) + 0.1
    return features, ids, quality


NEEDS_NUMBA = pytest.mark.skipif(not numba_available(), reason="numba is not installed")
# The host engines (compiled, NumPy) for "dpp" on CPU tensors, and the device engine.
BACKENDS = [pytest.param("numba", marks=NEEDS_NUMBA), "numpy", "torch"]
# Every engine for "dpp"; the other methods run as tensor ops only.
METHOD_BACKENDS = [
    pytest.param("dpp", "numba", marks=NEEDS_NUMBA),
    ("dpp", "numpy"),
    ("dpp", "torch"),
    ("greedy_cosine", "torch"),
    ("topk", "torch"),
]


@pytest.mark.parametrize(("method", "backend"), METHOD_BACKENDS)
@pytest.mark.parametrize("keep", [{"keep_ratio": 0.3}, {"keep_per_segment": 5}])
def test_matches_per_segment_reference(method, keep, backend):
    for seed in range(3):
        features, ids, quality = _sequence(seed)
        got = select_tokens_per_segment(
            features, ids, quality=quality, method=method, backend=backend, **keep
        )
        expected = select_tokens_reference(features, ids, quality=quality, method=method, **keep)
        assert torch.equal(got, expected), (method, keep, seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "layout", ["back_to_back", "equal_length_shuffled", "equal_length_interleaved", "uneven"]
)
def test_frame_layouts_match_reference(layout, backend):
    """Seed 003's layout (text, then frames one after the other) takes the no-gather path;
    frames of equal length taking turns (0 1 2 3 4 0 1 ...) span one contiguous range too,
    but are no view."""
    generator = torch.Generator().manual_seed(11)
    frames = torch.arange(5).repeat_interleave(12)
    if layout == "equal_length_shuffled":
        frames = frames[torch.randperm(60, generator=generator)]
    if layout == "equal_length_interleaved":
        frames = torch.arange(5).repeat(12)
    if layout == "uneven":
        frames = frames[:-3]
    ids = torch.cat([torch.full((4,), -1), frames, torch.full((3,), -1)])
    features = torch.randn(len(ids), 16, generator=generator, dtype=torch.float64)
    quality = torch.rand(len(ids), generator=generator, dtype=torch.float64)
    for method in ("dpp", "greedy_cosine", "topk"):
        engine = backend if method == "dpp" else "auto"  # host engines run the DPP only
        got = select_tokens_per_segment(
            features, ids, 0.25, quality=quality, method=method, backend=engine
        )
        expected = select_tokens_reference(features, ids, 0.25, quality=quality, method=method)
        assert torch.equal(got, expected), (layout, method)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dpp_without_quality_and_low_rank_fill_match_reference(backend):
    features, ids, quality = _sequence(5, d=3)  # rank 3 < most quotas: the DPP stops early
    for q in (None, quality):
        got = select_tokens_per_segment(features, ids, keep_ratio=0.5, quality=q, backend=backend)
        expected = select_tokens_reference(features, ids, keep_ratio=0.5, quality=q)
        assert torch.equal(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_quota_text_tokens_and_sorted_output(backend):
    features, ids, quality = _sequence(7)
    kept = select_tokens_per_segment(
        features, ids, keep_ratio=0.25, quality=quality, backend=backend
    )
    assert torch.equal(kept, torch.sort(kept).values)
    assert len(set(kept.tolist())) == len(kept)
    kept_ids = ids[kept]
    assert (kept_ids == -1).sum() == (ids == -1).sum()
    for seg, count in {0: 17, 1: 9, 3: 30, 4: 1}.items():
        assert (kept_ids == seg).sum() == tokens_to_keep(torch.tensor(count), 0.25, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_cases_k_zero_everything_all_text_and_empty(backend):
    def select(*args, **kwargs):
        return select_tokens_per_segment(*args, backend=backend, **kwargs)

    features, ids, quality = _sequence(8)
    text = torch.nonzero(ids < 0).squeeze(1)
    assert torch.equal(select(features, ids, keep_ratio=0.0), text)
    assert torch.equal(select(features, ids, keep_per_segment=0), text)
    everything = select(features, ids, keep_per_segment=1000)  # clamped
    assert torch.equal(everything, torch.arange(len(ids)))
    assert torch.equal(select(features, ids, keep_ratio=1.0), torch.arange(len(ids)))
    all_text = torch.full((5,), -1)
    assert torch.equal(select(features[:5], all_text, 0.5), torch.arange(5))
    for method in ("dpp", "greedy_cosine", "topk"):  # no segment at all, quality given
        engine = backend if method == "dpp" else "torch"
        kept = select_tokens_per_segment(
            features[:5], all_text, 0.5, quality=quality[:5], method=method, backend=engine
        )
        assert torch.equal(kept, torch.arange(5)), method
    empty = select(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long
    zero_tokens = features.clone()
    zero_tokens[ids == 3] = 0  # a frame of zero vectors: the DPP stops at once, quality fills
    assert torch.equal(
        select(zero_tokens, ids, 0.3, quality=quality),
        select_tokens_reference(zero_tokens, ids, 0.3, quality=quality),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_fill_reaches_nan_quality_tokens_when_the_kernel_runs_out(backend):
    """Rank-1 frames stop the DPP after one token; the usable tokens cannot meet the quota, so
    NaN-quality tokens fill it, by position, even when chosen tokens sit between them."""
    generator = torch.Generator().manual_seed(30)
    ids = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, -1, 1, 1])
    features = torch.randn(1, 3, generator=generator).expand(len(ids), 3).contiguous()
    quality = torch.tensor(
        [0.9, math.nan, 0.5, math.nan, math.nan, 0.1, 0.3, math.nan, 0.8, 1, 0.2, 0.1]
    )
    kept = select_tokens_per_segment(
        features, ids, keep_per_segment=5, quality=quality, backend=backend
    )
    # frame 0: the DPP takes 0 (best quality), the fill 2, 5 (usable), then 1, 3 (NaN, by position);
    # frame 1: the DPP takes 8, the fill 6, 10, 11, then 7; the text token 9 is always kept.
    assert kept.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]


def test_one_host_sync_for_all_segments():
    features, ids, quality = _sequence(9, dtype=torch.float32)
    for method in ("dpp", "greedy_cosine", "topk"):
        with count_host_syncs() as syncs:
            select_tokens_per_segment(
                features, ids, keep_ratio=0.25, quality=quality, method=method, backend="torch"
            )
        assert syncs.ops == {"Tensor.tolist": 1}, (method, syncs.ops)  # the sizes, together
    # The CPU engine reads CPU memory through NumPy views: no tensor op reads the host at all.
    with count_host_syncs() as syncs:
        select_tokens_per_segment(features, ids, keep_ratio=0.25, quality=quality)
    assert syncs.count == 0, syncs.ops
    with count_host_syncs() as syncs:  # the seed's loop: a torch.where per segment
        select_tokens_reference(features, ids, keep_ratio=0.25, quality=quality)
    assert syncs.count >= 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_host_and_device_engines_agree_on_many_frames(dtype):
    """Random frames (some rank-deficient, so the fill runs), both layouts, float32 and 64."""
    generator = torch.Generator().manual_seed(21)
    for trial in range(6):
        frames, per_frame, d = 12, 20, 6 + 8 * (trial % 2)  # d = 6 < quota: early stops
        ids = torch.arange(frames).repeat_interleave(per_frame)
        if trial >= 3:  # shuffled and uneven: the padded layout
            ids = ids[torch.randperm(len(ids), generator=generator)][: -7 * trial]
        ids = torch.cat([torch.full((5,), -1), ids])
        features = torch.randn(len(ids), d, generator=generator, dtype=dtype)
        quality = torch.rand(len(ids), generator=generator, dtype=dtype)
        for keep in ({"keep_ratio": 0.4}, {"keep_per_segment": 9}):
            device = select_tokens_per_segment(
                features, ids, quality=quality, backend="torch", **keep
            )
            for engine in ("auto", "numpy"):  # auto: compiled when numba is installed
                host = select_tokens_per_segment(
                    features, ids, quality=quality, backend=engine, **keep
                )
                assert torch.equal(host, device), (trial, keep, engine)


def test_backend_argument_is_checked():
    features, ids, quality = _sequence(3, dtype=torch.float32)
    with pytest.raises(ValueError, match="backend must be one of"):
        select_tokens_per_segment(features, ids, 0.25, backend="cuda")
    for host in ("numpy", "numba"):
        with pytest.raises(ValueError, match=f"backend='{host}' runs the DPP greedy"):
            select_tokens_per_segment(
                features, ids, 0.25, quality=quality, method="topk", backend=host
            )
        with pytest.raises(ValueError, match=f"backend='{host}' needs a float32 or float64 CPU"):
            select_tokens_per_segment(features.half(), ids, 0.25, backend=host)
    half = select_tokens_per_segment(features.bfloat16(), ids, 0.25)  # auto: the torch engine
    assert half.shape == select_tokens_per_segment(features, ids, 0.25).shape


def test_features_that_require_grad_are_accepted():
    features, ids, quality = _sequence(12, dtype=torch.float32)
    features.requires_grad_(True)
    for method in ("dpp", "greedy_cosine"):
        kept = select_tokens_per_segment(features, ids, 0.25, quality=quality, method=method)
        expected = select_tokens_reference(
            features.detach(), ids, 0.25, quality=quality, method=method
        )
        assert torch.equal(kept, expected)


def test_tokens_to_keep_rounds_up_and_clamps():
    counts = torch.tensor([0, 1, 3, 10, 196])
    assert tokens_to_keep(counts, 0.1, None).tolist() == [0, 1, 1, 1, 20]
    assert tokens_to_keep(counts, 0.3, None).tolist() == [0, 1, 1, 3, 59]
    assert tokens_to_keep(counts, None, 4).tolist() == [0, 1, 3, 4, 4]


def test_bad_arguments_raise():
    features, ids, quality = _sequence(10)
    with pytest.raises(ValueError, match="exactly one of keep_ratio"):
        select_tokens_per_segment(features, ids)
    with pytest.raises(ValueError, match="exactly one of keep_ratio"):
        select_tokens_per_segment(features, ids, 0.5, 3)
    with pytest.raises(ValueError, match=r"keep_ratio must be in \[0, 1\]"):
        select_tokens_per_segment(features, ids, 1.5)
    with pytest.raises(ValueError, match="pass quality"):
        select_tokens_per_segment(features, ids, 0.5, method="topk")
    with pytest.raises(ValueError, match="method must be one of"):
        select_tokens_per_segment(features, ids, 0.5, method="random")
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        select_tokens_per_segment(features[None], ids, 0.5)
    with pytest.raises(ValueError, match="segment_ids must have size"):
        select_tokens_per_segment(features, ids[:-1], 0.5)
    with pytest.raises(TypeError, match="integer"):
        select_tokens_per_segment(features, ids.float(), 0.5)


def test_torch_backend_never_takes_a_host_engine_and_any_float_quality_works(monkeypatch):
    import torchdoctor.ops.dpp as dpp
    import torchdoctor.ops.tokens as tokens

    features, ids, quality = _sequence(13, dtype=torch.float32)
    expected = select_tokens_per_segment(features, ids, 0.3, quality=quality.bfloat16())

    def forbidden(*args, **kwargs):
        raise AssertionError("backend='torch' ran a host greedy")

    monkeypatch.setattr(dpp, "_greedy_host", forbidden)
    monkeypatch.setattr(tokens, "select_dpp_host", forbidden)
    got = select_tokens_per_segment(features, ids, 0.3, quality=quality.bfloat16(), backend="torch")
    assert torch.equal(got, expected)
    half = dpp.dpp_greedy(features=features[:20], quality=quality[:20].half(), k=5, backend="torch")
    assert (half.indices >= 0).all()


@pytest.mark.parametrize("method", ["dpp", "greedy_cosine", "topk"])
def test_nan_quality_tokens_are_never_chosen_but_the_quota_holds(method):
    features, ids, quality = _sequence(14, dtype=torch.float32)
    quality = quality.clone()
    bad = (ids == 4).nonzero().squeeze(1)  # segment 4 has one token: its quota needs it
    quality[bad] = math.nan
    quality[(ids == 0).nonzero().squeeze(1)[:3]] = math.nan  # segment 0 has 17 tokens
    results = [
        select_tokens_per_segment(
            features, ids, 0.3, quality=quality, method=method, backend=backend
        )  # fmt: skip
        for backend in (["auto", "numpy", "torch"] if method == "dpp" else ["torch"])
    ]
    kept = results[0]
    assert all(torch.equal(kept, other) for other in results[1:])
    assert set(bad.tolist()) <= set(kept.tolist())  # quota of a one-token segment: kept anyway
    nan_in_zero = set((ids == 0).nonzero().squeeze(1)[:3].tolist())
    assert not nan_in_zero & set(kept.tolist())  # 17 tokens: enough usable ones
    for seg, count in {0: 17, 1: 9, 3: 30, 4: 1}.items():
        assert (ids[kept] == seg).sum() == tokens_to_keep(torch.tensor(count), 0.3, None)


@pytest.mark.parametrize(("method", "backend"), METHOD_BACKENDS)
@pytest.mark.parametrize("layout", ["gathered", "back_to_back"])
def test_huge_sparse_ids_cost_as_much_as_compact_ones(method, backend, layout, monkeypatch):
    """Ids need not be contiguous: the padded batch has one row per segment present, however
    large the ids (frame timestamps); the selection is that of the ids renumbered 0..S-1."""
    import torchdoctor.ops.tokens as tokens

    features, small, quality = _sequence(15)  # 63 tokens, ids 0, 1, 3, 4 and -1
    if layout == "back_to_back":  # 4 frames of 14 tokens one after the other: no gather
        frames = torch.arange(4).repeat_interleave(14)
        small = torch.cat([torch.full((3,), -1), frames, torch.full((4,), -1)])
    stamps = torch.tensor([10**6, 3 * 10**6 + 7, 2**40, 2**62 - 1, 2**62])  # sorted like 0..4
    huge = torch.where(small >= 0, stamps[small.clamp(min=0)], -1)
    padded_rows = []
    original = tokens.pad_segments

    def spy(*args, **kwargs):
        padded, mask = original(*args, **kwargs)
        padded_rows.append(padded.shape[0])
        return padded, mask

    monkeypatch.setattr(tokens, "pad_segments", spy)
    for keep in ({"keep_ratio": 0.3}, {"keep_per_segment": 4}):
        got = select_tokens_per_segment(
            features, huge, quality=quality, method=method, backend=backend, **keep
        )
        expected = select_tokens_reference(features, small, quality=quality, method=method, **keep)
        assert torch.equal(got, expected), keep
    segments = len(set(small[small >= 0].tolist()))
    assert all(rows == segments for rows in padded_rows), padded_rows


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_exhausted_kernel_stops_in_float32_and_at_any_quality_scale(backend, dtype):
    """Three copies of one token and two of another (rank 2), keep 3: the DPP picks one of
    each direction (the best quality), then fills by quality. float32 rounding (about 1e-7 of
    q^2) passed an absolute eps for a new direction once q > 3; quality of softmax size (1e-3,
    q^2 below eps) stopped the DPP at once. eps is relative to the segment's largest q^2."""
    a, b = [1.0, 2.0, 3.0], [3.0, -1.0, 0.5]
    features = torch.tensor([a, a, a, b, b], dtype=dtype)
    ids = torch.zeros(5, dtype=torch.long)
    quality = torch.tensor([5.0, 3.0, 4.0, 3.0, 5.0], dtype=dtype)
    for scale in (1.0, 1e-3, 1e3):
        got = select_tokens_per_segment(
            features, ids, keep_per_segment=3, quality=quality * scale, backend=backend
        )
        assert got.tolist() == [0, 2, 4], (scale, got)
        expected = select_tokens_reference(features, ids, keep_per_segment=3,
                                           quality=quality * scale)  # fmt: skip
        assert torch.equal(got, expected), scale


def test_small_quality_scores_still_select_diverse_tokens():
    """Quality of softmax size: the DPP still trades quality for diversity instead of falling
    back to the top-k by quality (q^2 ~ 1e-6 was below the absolute eps)."""
    features = torch.tensor([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0]], dtype=torch.float64)
    quality = torch.tensor([1.0, 0.95, 0.9], dtype=torch.float64) * 1e-3
    ids = torch.zeros(3, dtype=torch.long)
    got = select_tokens_per_segment(features, ids, keep_per_segment=2, quality=quality)
    assert got.tolist() == [0, 2]  # not [0, 1]: the top-2 by quality are one direction


@pytest.mark.parametrize("infinite", [math.inf, -math.inf])
def test_an_infinite_quality_is_the_largest_one_on_every_backend(infinite):
    """inf / inf turned the token's scaled quality into NaN, which torch sorted first and NumPy
    last: the backends kept different tokens."""
    features = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([-1, 0, 0, 0, 0, 1, 1, 1, 1, -1])
    quality = torch.ones(10)
    quality[1] = infinite
    big = quality.clone()
    big[1] = math.copysign(torch.finfo(torch.float32).max, infinite)
    expected = select_tokens_per_segment(features, ids, 0.5, quality=big, backend="torch")
    assert 1 in expected.tolist()
    for backend in ["numba"] * numba_available() + ["numpy", "torch"]:
        kept = select_tokens_per_segment(features, ids, 0.5, quality=quality, backend=backend)
        assert kept.tolist() == expected.tolist(), backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_cosines_equal_in_exact_arithmetic_go_to_the_lowest_position(backend):
    # Tokens 1 and 2 have the same cosine to token 0 (-1/sqrt(3)): the torch engine and the
    # reference rounded token 2's gain higher, the host engines token 1's.
    features = torch.tensor([[-1.0, -1.0, -1.0], [0.0, 2.0, 0.0], [2.0, -1.0, 2.0]])
    ids = torch.zeros(3, dtype=torch.long)
    for dtype in (torch.float64, torch.float32):
        tokens = features.to(dtype)
        kept = select_tokens_per_segment(tokens, ids, keep_per_segment=2, backend=backend)
        assert kept.tolist() == [0, 1]
        assert select_tokens_reference(tokens, ids, keep_per_segment=2).tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_are_computed_in_float32(dtype):
    # float16 tokens of norm ~1000 overflowed their Gram matrix (inf norms: every token the
    # same), of norm ~0.005 lost it to subnormals; bfloat16 kept 3 digits of the gains.
    for seed in (14, 15):
        features, ids, quality = _sequence(seed, dtype=torch.float64)
        for scale, method in ((1.0, "dpp"), (200.0, "dpp"), (1e-3, "dpp"), (2e2, "greedy_cosine")):
            half = (features * scale).to(dtype)
            got = select_tokens_per_segment(half, ids, 0.3, method=method)
            expected = select_tokens_per_segment(half.double(), ids, 0.3, method=method)
            assert torch.equal(got, expected), (seed, scale)
            reference = select_tokens_reference(half, ids, 0.3, method=method)
            assert torch.equal(reference, expected), (seed, scale)
        low = quality.to(dtype)
        weighted = select_tokens_per_segment(half, ids, 0.3, quality=low)
        expected = select_tokens_per_segment(half.double(), ids, 0.3, quality=low.double())
        assert torch.equal(weighted, expected)


def test_greedy_cosine_ties_go_to_the_lowest_position():
    # After tokens 0 and 3, tokens 2 and 4 both score 1 - 1/(3 sqrt 3) (their largest cosine
    # is to token 0, the same for both); the op rounded token 4's score higher, the reference 2's.
    features = torch.tensor([[-1, 1, -1], [-2, 0, 1], [-1, -2, -2], [2, -1, 0], [-1, 2, 2]])
    ids = torch.zeros(5, dtype=torch.long)
    for dtype in (torch.float64, torch.float32):
        args = (features.to(dtype), ids)
        kept = select_tokens_per_segment(*args, keep_per_segment=3, method="greedy_cosine")
        assert kept.tolist() == [0, 2, 3]
        reference = select_tokens_reference(*args, keep_per_segment=3, method="greedy_cosine")
        assert reference.tolist() == [0, 2, 3]


@pytest.mark.parametrize("method", ["dpp", "greedy_cosine", "topk"])
def test_reference_counts_an_infinite_quality_as_the_largest_magnitude(method):
    # The op's documented rule; the reference divided by an infinite top (inf / inf = NaN).
    features = torch.randn(12, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    quality = torch.rand(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    quality[3] = math.inf
    ids = torch.zeros(12, dtype=torch.long)
    expected = select_tokens_per_segment(features, ids, 0.5, quality=quality, method=method)
    got = select_tokens_reference(features, ids, 0.5, quality=quality, method=method)
    assert torch.equal(got, expected)

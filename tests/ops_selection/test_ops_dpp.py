"""dpp_greedy: the same selection as the plain per-problem algorithm, batched and sync-free."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchdoctor.ops.dpp import dpp_greedy, numba_available
from torchdoctor.ops.reference.dpp import dpp_greedy_reference, dpp_kernel
from torchdoctor.testing import count_host_syncs


def _reference(kernels, ks, eps=1e-10, masks=None):
    rows, dets = [], []
    for b in range(kernels.shape[0]):
        mask = None if masks is None else masks[b]
        selected, log_det = dpp_greedy_reference(kernels[b], int(ks[b]), eps=eps, mask=mask)
        rows.append(selected)
        dets.append(log_det)
    width = max(min(int(ks.max()), kernels.shape[-1]), 0)
    padded = torch.full((kernels.shape[0], width), -1, dtype=torch.long)
    for b, selected in enumerate(rows):
        padded[b, : len(selected)] = torch.tensor(selected, dtype=torch.long)
    return padded, torch.tensor(dets, dtype=kernels.dtype)


NEEDS_NUMBA = pytest.mark.skipif(not numba_available(), reason="numba is not installed")
BACKENDS = [pytest.param("numba", marks=NEEDS_NUMBA), "numpy", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 5, 20, 50])
def test_random_psd_kernels_match_reference(n, backend):
    generator = torch.Generator().manual_seed(n)
    factors = torch.randn(12, n, n + 3, generator=generator, dtype=torch.float64)
    kernels = factors @ factors.mT
    ks = torch.randint(0, n + 3, (12,), generator=generator)
    got = dpp_greedy(kernels, k=ks, backend=backend)
    indices, log_det = _reference(kernels, ks)
    assert torch.equal(got.indices, indices)
    torch.testing.assert_close(got.log_det, log_det)


@pytest.mark.parametrize("backend", BACKENDS)
def test_low_rank_features_with_quality_match_reference_and_stop_at_rank(backend):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(10, 40, 8, generator=generator, dtype=torch.float64)
    quality = torch.rand(10, 40, generator=generator, dtype=torch.float64) + 0.5
    got = dpp_greedy(features=features, quality=quality, k=15, eps=1e-8, backend=backend)
    kernels = torch.stack([dpp_kernel(f, q) for f, q in zip(features, quality)])
    indices, log_det = _reference(kernels, torch.full((10,), 15), eps=1e-8)
    assert torch.equal(got.indices, indices)
    assert ((got.indices >= 0).sum(-1) == 8).all()  # rank 8: the eps stop ends it
    torch.testing.assert_close(got.log_det, log_det)
    via_kernel = dpp_greedy(kernels, k=15, eps=1e-8, backend=backend)
    assert torch.equal(via_kernel.indices, got.indices)


def test_log_det_is_that_of_the_selected_submatrix():
    generator = torch.Generator().manual_seed(2)
    factors = torch.randn(4, 30, 40, generator=generator, dtype=torch.float64)
    kernels = factors @ factors.mT
    got = dpp_greedy(kernels, k=10)
    for b in range(4):
        chosen = got.indices[b]
        sub = kernels[b][chosen][:, chosen]
        torch.testing.assert_close(got.log_det[b], torch.logdet(sub))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_leading_dims_and_per_problem_k(backend):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 3, 25, 30, generator=generator, dtype=torch.float64)
    mask = torch.rand(2, 3, 25, generator=generator) > 0.3
    ks = torch.tensor([[0, 4, 9], [2, 30, 5]])
    got = dpp_greedy(features=features, k=ks, mask=mask, max_k=30, backend=backend)
    assert got.indices.shape == (2, 3, 25)  # k > N is clamped to N
    flat_kernels = features.reshape(6, 25, 30) @ features.reshape(6, 25, 30).mT
    indices, log_det = _reference(flat_kernels, ks.reshape(6), masks=mask.reshape(6, 25))
    assert torch.equal(got.indices.reshape(6, -1)[:, : indices.shape[1]], indices)
    assert (got.indices.reshape(6, -1)[:, indices.shape[1] :] == -1).all()
    torch.testing.assert_close(got.log_det.reshape(6), log_det)
    selected = got.indices.reshape(6, -1)
    valid = selected >= 0
    assert mask.reshape(6, 25).gather(1, selected.clamp(min=0))[valid].all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_zero_k_above_n_and_non_psd_kernel(backend):
    kernel = torch.eye(4, dtype=torch.float64)
    empty = dpp_greedy(kernel, k=0, backend=backend)
    assert empty.indices.shape == (0,) and empty.log_det.item() == 0
    everything = dpp_greedy(kernel, k=10, backend=backend)
    assert sorted(everything.indices.tolist()) == [0, 1, 2, 3]
    not_psd = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    result = dpp_greedy(not_psd, k=2, backend=backend)  # second gain 1 - 4 < 0: stops, no error
    assert result.indices.tolist() == [0, -1]
    negative_diagonal = dpp_greedy(-torch.eye(3), k=2, backend=backend)
    assert negative_diagonal.indices.tolist() == [-1, -1]


def test_inputs_that_require_grad_are_accepted():
    features = torch.randn(2, 10, 4, requires_grad=True)
    result = dpp_greedy(features=features, quality=torch.rand(2, 10, requires_grad=True), k=3)
    assert not result.log_det.requires_grad and (result.indices >= 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_host_sync_on_kernel_and_features_paths(backend):
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(8, 30, 10, generator=generator)
    kernels = features @ features.mT
    with count_host_syncs() as syncs:
        dpp_greedy(kernels, k=6, backend=backend)
        dpp_greedy(features=features, quality=torch.rand(8, 30), k=6, backend=backend)
        dpp_greedy(kernels, k=torch.full((8,), 3), max_k=6, backend=backend)
    assert syncs.count == 0, syncs.ops


def test_backends_agree_in_float32_and_reject_what_numpy_cannot_hold():
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(16, 60, 40, generator=generator)
    quality = torch.rand(16, 60, generator=generator)
    for source in ({"features": features}, {"kernel": features @ features.mT}):
        results = [
            dpp_greedy(**source, quality=quality, k=20, eps=1e-4, backend=backend)
            for backend in ["auto", "numpy", "torch"]
        ]
        for other in results[1:]:
            assert torch.equal(results[0].indices, other.indices)
            torch.testing.assert_close(results[0].log_det, other.log_det)
    for host in ("numpy", "numba"):
        with pytest.raises(ValueError, match=f"backend='{host}' needs a float32 or float64 CPU"):
            dpp_greedy(features=features.bfloat16(), k=3, backend=host)
    with pytest.raises(ValueError, match="backend must be one of"):
        dpp_greedy(features=features, k=3, backend="scipy")
    auto = dpp_greedy(features=features.bfloat16(), k=3)  # auto: the torch engine
    assert auto.indices.shape == (16, 3)


def test_without_numba_auto_runs_numpy_and_numba_is_a_clear_error(monkeypatch):
    import torchdoctor.ops.dpp as dpp

    kernels = torch.randn(3, 12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = dpp_greedy(features=kernels, k=4, backend="numpy")
    monkeypatch.setattr(dpp, "compiled_engine", lambda: None)
    assert dpp.host_engine("auto", kernels) == "numpy"
    assert torch.equal(dpp_greedy(features=kernels, k=4).indices, expected.indices)
    with pytest.raises(ValueError, match=r"needs numba: pip install 'torchdoctor\[fast\]'"):
        dpp_greedy(features=kernels, k=4, backend="numba")


@NEEDS_NUMBA
def test_compiled_engine_stops_each_problem_at_its_own_k_and_at_eps():
    """The compiled engine ends a problem early (the others keep going): NaN gains after."""
    from torchdoctor.ops._greedy_jit import greedy as run

    generator = torch.Generator().manual_seed(5)
    features = torch.randn(3, 10, 2, dtype=torch.float64, generator=generator).numpy()  # rank 2
    gains = (features**2).sum(-1)
    items, bests = run(features, False, None, gains, 6, np.array([6, 1, 0]), 1e-9)
    assert items.shape == bests.shape == (6, 3)
    assert np.isfinite(bests[:2, 0]).all() and not bests[2, 0] > 1e-9  # the third gain is ~0
    assert np.isnan(bests[3:, 0]).all()
    assert np.isfinite(bests[0, 1]) and np.isnan(bests[1:, 1]).all()  # its own k = 1
    assert np.isnan(bests[:, 2]).all()  # k = 0: nothing
    assert (gains == (features**2).sum(-1)).all()  # the caller's gains are not modified


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="exactly one of kernel"):
        dpp_greedy(torch.eye(3), features=torch.eye(3), k=1)
    with pytest.raises(ValueError, match="square"):
        dpp_greedy(torch.zeros(3, 4), k=1)
    with pytest.raises(ValueError, match="non-negative int"):
        dpp_greedy(torch.eye(3), k=-1)
    with pytest.raises(TypeError, match="bool tensor"):
        dpp_greedy(torch.eye(3), k=1, mask=torch.ones(3))
    with pytest.raises(ValueError, match="quality must have size 3"):
        dpp_greedy(torch.eye(3), k=1, quality=torch.ones(4))
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        dpp_greedy(torch.eye(3), k=1, eps=-1.0)
    with pytest.raises(ValueError, match="non-finite"):
        dpp_greedy(torch.tensor([[math.nan]]), k=1, check=True)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 12), k=st.integers(0, 14), seed=st.integers(0, 9999))
def test_properties_first_pick_is_max_quality_and_gains_decrease(n, d, k, seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=generator, dtype=torch.float64)
    quality = torch.rand(n, generator=generator, dtype=torch.float64) + 0.1
    result = dpp_greedy(features=features, quality=quality, k=k, eps=1e-9)
    chosen = result.indices[result.indices >= 0].tolist()
    assert len(chosen) == len(set(chosen)) <= min(k, n, d)
    if chosen:
        diag = quality**2 * (features**2).sum(-1)
        assert chosen[0] == int(torch.argmax(diag))
        kernel = dpp_kernel(features, quality)
        sub = kernel[chosen][:, chosen]
        torch.testing.assert_close(result.log_det, torch.logdet(sub))


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_random_problems_match_reference(backend):
    """300 problems of random size, rank, quality, mask and k (float64), one at a time."""
    generator = torch.Generator().manual_seed(7)
    for trial in range(300):
        n = int(torch.randint(1, 40, (1,), generator=generator))
        rank = int(torch.randint(1, n + 5, (1,), generator=generator))
        k = int(torch.randint(0, n + 3, (1,), generator=generator))
        features = torch.randn(n, rank, generator=generator, dtype=torch.float64)
        quality = torch.rand(n, generator=generator, dtype=torch.float64) + 0.05
        mask = torch.rand(n, generator=generator) > 0.2 if trial % 3 == 0 else None
        kernel = dpp_kernel(features, quality)
        expected, log_det = dpp_greedy_reference(kernel, k, eps=1e-9, mask=mask)
        for got in (
            dpp_greedy(kernel, k=k, eps=1e-9, mask=mask, backend=backend),
            dpp_greedy(
                features=features, quality=quality, k=k, eps=1e-9, mask=mask, backend=backend
            ),
        ):
            chosen = got.indices[got.indices >= 0].tolist()
            assert chosen == expected, (trial, n, rank, k)
            assert math.isclose(float(got.log_det), log_det, rel_tol=1e-9, abs_tol=1e-9)


def _without(kernel, item):
    keep = [i for i in range(kernel.shape[0]) if i != item]
    return kernel[keep][:, keep]


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_items_are_never_selected_and_leave_the_others_alone(backend):
    """A NaN item (NaN quality, or a NaN row of an item masked out) is skipped as if absent."""
    kernel = torch.eye(3, dtype=torch.float64)
    quality = torch.tensor([math.nan, 1.0, 2.0], dtype=torch.float64)
    assert dpp_greedy(kernel, quality=quality, k=3, backend=backend).indices.tolist() == [2, 1, -1]
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [math.nan, math.nan]], dtype=torch.float64)
    masked = torch.tensor([True, True, False])
    got = dpp_greedy(features=rows, k=2, mask=masked, backend=backend)
    assert got.indices.tolist() == [0, 1]
    generator = torch.Generator().manual_seed(8)
    for trial in range(60):
        n = int(torch.randint(2, 15, (1,), generator=generator))
        features = torch.randn(n, n + 2, generator=generator, dtype=torch.float64)
        quality = torch.rand(n, generator=generator, dtype=torch.float64) + 0.1
        bad = int(torch.randint(0, n, (1,), generator=generator))
        k = int(torch.randint(1, n + 1, (1,), generator=generator))
        clean = dpp_kernel(features, quality)
        expected, log_det = dpp_greedy_reference(_without(clean, bad), k, eps=1e-9)
        expected = [i + (i >= bad) for i in expected]  # back to positions with the bad item
        mask = torch.arange(n) != bad
        nan_quality = quality.clone()
        nan_quality[bad] = math.nan
        nan_features = features.clone()
        nan_features[bad] = math.nan
        nan_kernel = clean.clone()
        nan_kernel[bad] = nan_kernel[:, bad] = math.nan
        for got in (
            dpp_greedy(features=features, quality=nan_quality, k=k, eps=1e-9, backend=backend),
            dpp_greedy(clean, quality=nan_quality / quality, k=k, eps=1e-9, backend=backend),
            dpp_greedy(
                features=nan_features, quality=quality, k=k, mask=mask, eps=1e-9, backend=backend
            ),
            dpp_greedy(nan_kernel, k=k, mask=mask, eps=1e-9, backend=backend),
        ):
            assert got.indices[got.indices >= 0].tolist() == expected, (trial, n, bad, k)
            assert math.isclose(float(got.log_det), log_det, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_gives_empty_selections_on_every_backend(backend):
    for source in ({"kernel": torch.zeros(0, 3, 3)}, {"features": torch.zeros(0, 3, 2)}):
        got = dpp_greedy(**source, k=2, backend=backend)
        assert got.indices.shape == (0, 2) and got.indices.dtype == torch.long
        assert got.log_det.shape == (0,)
        k = torch.zeros(0, dtype=torch.long)
        weighted = dpp_greedy(**source, quality=torch.ones(0, 3), k=k, max_k=1, backend=backend)
        assert weighted.indices.shape == (0, 1)


@pytest.mark.parametrize("name", ["quality", "mask"])
def test_quality_and_mask_batch_dims_must_fit_the_kernel(name):
    def extra(*shape):
        return torch.ones(*shape, dtype=torch.bool if name == "mask" else torch.float32)

    kernels = torch.eye(3).expand(2, 3, 3)
    cases = [(kernels, (3, 3)), (torch.eye(3), (2, 3)), (kernels, (2, 2, 3))]
    for kernel, shape in cases:
        expected = tuple(kernel.shape[:-1])
        message = re.escape(f"{name} of shape {shape}") + ".*" + re.escape(f"expected {expected}")
        with pytest.raises(ValueError, match=message):
            dpp_greedy(kernel, k=1, **{name: extra(*shape)})
    features = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=rf"{name} of shape \(4, 3\)"):
        dpp_greedy(features=features, k=1, **{name: extra(4, 3)})
    for shape in [(3,), (1, 3), (2, 3)]:  # missing or size-1 leading dims broadcast
        assert dpp_greedy(kernels, k=2, **{name: extra(*shape)}).indices.tolist() == [[0, 1]] * 2


def test_a_negative_k_in_a_tensor_raises_like_a_negative_int():
    kernels = torch.eye(3).expand(2, 3, 3)
    with pytest.raises(ValueError, match="non-negative"):
        dpp_greedy(kernels[0], k=-1)
    with pytest.raises(ValueError, match=r"non-negative.*-1"):
        dpp_greedy(kernels, k=torch.tensor([-1, 2]))  # k.max() is read anyway: no extra sync
    with pytest.raises(ValueError, match=r"non-negative.*-3"):
        dpp_greedy(kernels, k=torch.tensor([-3, 2]), max_k=2, check=True)
    assert dpp_greedy(kernels, k=torch.tensor([0, 2])).indices.tolist() == [[-1, -1], [0, 1]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gains_equal_in_exact_arithmetic_go_to_the_lowest_index(backend, dtype):
    # [1, 2] and [2, 1]: equal gains at each step (5 = 5, then 9/5 = 9/5 and 2 = 2), which
    # every engine rounded apart and broke towards item 4 (an exact determinant says 1, 2).
    features = torch.tensor(
        [[[-1, 0], [1, 2], [-1, 1], [0, 1], [2, 1]], [[2, 1], [1, -1], [-1, 0], [-1, -2], [-1, 1]]],
        dtype=dtype,
    )
    kernels = features @ features.mT
    for source in ({"features": features}, {"kernel": kernels}):
        got = dpp_greedy(**source, k=3, eps=0.01, backend=backend)
        assert got.indices.tolist() == [[1, 2, -1], [0, 1, -1]]
    assert [dpp_greedy_reference(kernel, 3, eps=0.01)[0] for kernel in kernels] == [[1, 2], [0, 1]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    # float16 features of norm ~400: q^2 K_ii overflowed (the selection stopped after 2 items);
    # bfloat16 gains kept 3 digits and picked other items than the same values in float32.
    generator = torch.Generator().manual_seed(9)
    features = (torch.randn(64, 8, 16, generator=generator) * 100).to(dtype)
    wide = features.double()
    kernels = ((wide / 10) @ (wide / 10).mT).to(dtype)  # entries up to ~2e3 (float16: 65504)
    for source, exact in (({"features": features}, {"features": wide}),
                          ({"kernel": kernels}, {"kernel": kernels.double()})):  # fmt: skip
        got = dpp_greedy(**source, k=5, eps=1.0)
        expected = dpp_greedy(**exact, k=5, eps=1.0)
        assert torch.equal(got.indices, expected.indices)
        assert got.log_det.dtype == dtype
        torch.testing.assert_close(got.log_det.double(), expected.log_det, rtol=1e-2, atol=0)

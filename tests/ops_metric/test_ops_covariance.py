from __future__ import annotations

import pytest
import torch

from torchdoctor.ops import CovarianceEMA, covariance


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_covariance_half_precision_is_computed_in_float32(dtype):
    """float16 sums once overflowed to inf although the covariance (~400) fits float16."""
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0)) * 20
    out = covariance(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out, covariance(x.to(dtype).float()).to(dtype), rtol=0, atol=0)
    shrunk = covariance(x.to(dtype), shrinkage=0.5, unbiased=False)
    expected = covariance(x.to(dtype).float(), shrinkage=0.5, unbiased=False).to(dtype)
    assert shrunk.dtype == dtype and torch.equal(shrunk, expected)
    leaf = x.to(dtype).requires_grad_()
    covariance(leaf).sum().backward()
    assert leaf.grad.dtype == dtype and torch.isfinite(leaf.grad).all()


def test_covariance_ema_loads_a_state_of_another_shape_like_a_fresh_one():
    """Loading once failed with a raw "size mismatch for average" once the EMA held a shape."""
    saved = CovarianceEMA(decay=0.9)
    saved.update(torch.eye(3))
    saved.update(3 * torch.eye(3))
    state = saved.state_dict()
    fresh = CovarianceEMA(decay=0.9)
    fresh.load_state_dict(state)
    used = CovarianceEMA(decay=0.9).double()
    used.update(torch.eye(2, dtype=torch.float64))
    used.load_state_dict(state)
    assert used.value().shape == (3, 3) and used.value().dtype == torch.float64
    torch.testing.assert_close(used.value(), fresh.value().double())
    assert int(used.num_updates) == 2
    used.update(torch.eye(3, dtype=torch.float64))  # carries on with the loaded shape
    fresh.update(torch.eye(3))
    torch.testing.assert_close(used.value(), fresh.value().double())
    with pytest.raises(ValueError, match="call reset"):
        used.update(torch.eye(2, dtype=torch.float64))


def test_covariance_ema_loads_the_state_of_one_never_updated_as_a_reset():
    """The state of a fresh EMA has no average: loading it raised "Missing key(s): average"
    after setting num_updates to 0 and keeping the old average."""
    used = CovarianceEMA(decay=0.9)
    used.update(torch.eye(2))
    used.load_state_dict(CovarianceEMA(decay=0.9).state_dict())
    assert used.average is None and int(used.num_updates) == 0
    used.update(torch.eye(3))  # (a new shape is fine, as after reset())
    assert used.value().shape == (3, 3)


def test_covariance_ema_first_updated_under_inference_mode_keeps_updating_outside_it():
    """A warm-up pass under inference_mode made the average an inference tensor: every later
    update in training raised torch's in-place error."""
    ema = CovarianceEMA(decay=0.9)
    with torch.inference_mode():
        ema.update(torch.eye(2))
    ema.update(2 * torch.eye(2))
    # bias-corrected: (0.9 * 0.1 * 1 + 0.1 * 2) / (1 - 0.9**2)
    torch.testing.assert_close(ema.value(), torch.eye(2) * (0.29 / 0.19))


@pytest.mark.parametrize("offset", [1e6, 1e7, -3e7])
def test_float32_samples_far_from_zero_are_centered_exactly(offset):
    # The float32 mean of samples offset +- 1 is off by ulps of the offset: the covariance was
    # 1e-2 off at 1e6 and 100% at 1e7 (float64 of the same float32 values is the truth).
    generator = torch.Generator().manual_seed(0)
    x = (offset + torch.randn(3, 200, 4, generator=generator, dtype=torch.float64)).float()
    want = covariance(x.double())
    got = covariance(x)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_too_few_samples_error_gives_a_remedy_that_applies():
    """With unbiased=False already given, n = 0 was told "at least 1 samples ... pass more
    samples or unbiased=False" (oracle round 6)."""
    with pytest.raises(ValueError, match=r"at least 2 samples .* got n = 1; .*unbiased=False"):
        covariance(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"at least 1 sample along") as error:
        covariance(torch.zeros(0, 3), unbiased=False)
    assert "unbiased=False" not in str(error.value)


def test_shrinkage_costs_one_pass_over_the_matrices():
    """(1 - a) S + a (trace(S) / d) I formed target * I as a (..., d, d) tensor: five passes
    over the matrices, which for seed 000's 64 images of K = 4 parts in d = 64 cost 5x the
    covariance itself (oracle round 7). Now one scaling and an in-place diagonal add."""
    from torch.utils._python_dispatch import TorchDispatchMode

    x = torch.randn(64, 4, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    class MatrixPasses(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.numel() == 64 * 64 * 64:
                self.count += func._schema.name not in ("aten::view", "aten::transpose")
            return out

    with MatrixPasses() as plain:
        covariance(x, unbiased=False)
    with MatrixPasses() as shrunk:
        got = covariance(x, shrinkage=0.3, unbiased=False)
    assert shrunk.count <= plain.count + 1
    s = torch.stack([torch.cov(v.T, correction=0) for v in x])
    target = s.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(64)
    torch.testing.assert_close(got, 0.7 * s + 0.3 * target)

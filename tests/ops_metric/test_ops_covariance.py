from __future__ import annotations

import pytest
import torch

from torchdoctor.ops import covariance


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

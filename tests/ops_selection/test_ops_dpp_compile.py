"""dpp_greedy(backend="torch"), the accelerator path, traces under torch.compile with dynamic
shapes (oracle round 8: the steps wrote with out= variants, and the default torch.compile raised
"Cannot call numel() on tensor with symbolic sizes/strides" at the second input size)."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.ops import dpp_greedy


@pytest.mark.parametrize("use_kernel", [False, True])
def test_the_torch_greedy_compiles_with_dynamic_shapes(use_kernel):
    torch._dynamo.reset()

    def pick(features, quality):
        if use_kernel:
            return dpp_greedy(features @ features.mT, quality=quality, k=4, backend="torch")
        return dpp_greedy(features=features, quality=quality, k=4, backend="torch")

    compiled = torch.compile(pick, backend="aot_eager", dynamic=True)
    for n in (9, 13):
        generator = torch.Generator().manual_seed(n)
        features = torch.randn(3, n, 5, generator=generator, dtype=torch.float64)
        quality = torch.rand(3, n, generator=generator, dtype=torch.float64) + 0.5
        got, expected = compiled(features, quality), pick(features, quality)
        assert torch.equal(got.indices, expected.indices)
        torch.testing.assert_close(got.log_det, expected.log_det)

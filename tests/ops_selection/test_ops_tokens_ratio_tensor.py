"""keep_ratio given as a 0-dim float32/float16/bfloat16 tensor keeps what the ratio it stands for
keeps (oracle round 8: ``torch.tensor(0.1)`` is 0.10000000149, whose ceiling kept 2 tokens of
10, not 1; float16 0.7 kept 8 of 10)."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.ops import select_tokens_per_segment

COUNTS = list(range(1, 31))  # one segment of each size 1..30
IDS = torch.cat([torch.full((c,), s) for s, c in enumerate(COUNTS)])
FEATURES = torch.randn(IDS.numel(), 6, generator=torch.Generator().manual_seed(0))
RATIOS = (0.1, 0.3, 0.7, 1 / 3, 2 / 3, 0.45)


def _kept_per_segment(kept: torch.Tensor) -> list[int]:
    return torch.bincount(IDS[kept], minlength=len(COUNTS)).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_a_narrow_ratio_tensor_keeps_what_its_ratio_keeps(dtype, backend):
    for ratio in RATIOS:
        as_number = select_tokens_per_segment(FEATURES, IDS, ratio, backend=backend)
        as_tensor = select_tokens_per_segment(
            FEATURES, IDS, torch.tensor(ratio, dtype=dtype), backend=backend
        )
        assert _kept_per_segment(as_tensor) == _kept_per_segment(as_number), ratio
        assert torch.equal(as_tensor, as_number), ratio


def test_a_ratio_tensor_still_means_its_own_value_where_that_is_not_a_simple_fraction():
    ratio = torch.tensor(0.30078125, dtype=torch.float32)  # exact in float32: kept as is
    kept = select_tokens_per_segment(FEATURES, IDS, ratio)
    assert _kept_per_segment(kept)[9] == 4  # ceil(0.30078125 * 10), not 3

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

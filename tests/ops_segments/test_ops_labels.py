from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchdoctor.ops import remap_labels
from torchdoctor.ops.reference.labels import remap_labels_after, remap_labels_before
from torchdoctor.testing import count_host_syncs


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    values=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30),
    shape_split=st.booleans(),
    dtype=st.sampled_from([torch.long, torch.int32]),
)
def test_remap_labels_matches_seed_002_before_and_after(values, shape_split, dtype):
    if dtype == torch.int32:
        values = [v % 1000 - 500 for v in values]
    labels = torch.tensor(values, dtype=dtype)
    if shape_split and len(values) % 2 == 0:
        labels = labels.view(2, -1)
    contiguous, unique_values = remap_labels(labels)
    assert contiguous.shape == labels.shape and contiguous.dtype == torch.long
    assert unique_values.dtype == labels.dtype
    assert torch.equal(contiguous, remap_labels_before(labels))
    assert torch.equal(contiguous, remap_labels_after(labels))
    assert torch.equal(unique_values[contiguous], labels)


def test_remap_labels_is_one_op_with_one_sync():
    labels = torch.randint(0, 1000, (4096,), generator=torch.Generator().manual_seed(0))
    with count_host_syncs() as syncs:
        remap_labels(labels)
    assert syncs.ops == {"aten::_unique2": 1}
    assert syncs.count == 1


def test_remap_labels_rejects_floats():
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        remap_labels(torch.tensor([1.0, 2.0]))

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchdoctor.ops import group_by_segment, pad_segments
from torchdoctor.ops.reference.segments import pad_segments_reference, segment_indices_reference
from torchdoctor.testing import count_host_syncs

ids_strategy = st.integers(1, 3).flatmap(
    lambda rows: st.integers(0, 12).flatmap(
        lambda n: st.lists(
            st.lists(st.integers(-1, 4), min_size=n, max_size=n), min_size=rows, max_size=rows
        )
    )
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(rows=ids_strategy, features=st.sampled_from([(), (1,), (2, 3)]))
def test_pad_segments_matches_reference(rows, features):
    ids = torch.tensor(rows, dtype=torch.long)
    values = torch.randn(*ids.shape, *features, generator=torch.Generator().manual_seed(1))
    padded, mask = pad_segments(values, ids, fill=-7.0)
    ref_padded, ref_mask = pad_segments_reference(values, ids, fill=-7.0)
    assert padded.shape == ref_padded.shape
    assert torch.equal(mask, ref_mask)
    assert torch.equal(padded, ref_padded)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(row=st.lists(st.integers(-1, 5), min_size=0, max_size=20))
def test_group_by_segment_matches_per_segment_where(row):
    ids = torch.tensor(row, dtype=torch.long)
    order, counts, offsets = group_by_segment(ids)
    reference = segment_indices_reference(ids)
    assert counts.sum().item() == sum(len(v) for v in reference.values())
    for seg in range(counts.numel()):
        start, count = int(offsets[seg]), int(counts[seg])
        expected = reference.get(seg, torch.empty(0, dtype=torch.long))
        assert order[start : start + count].tolist() == expected.tolist()
    # Ignored tokens come last.
    assert sorted(order[int(counts.sum()) :].tolist()) == torch.where(ids < 0)[0].tolist()


def test_group_by_segment_batched_rows_are_independent():
    ids = torch.tensor([[0, 2, 0, 1], [2, 2, -1, 0]])
    order, counts, offsets = group_by_segment(ids, num_segments=3)
    for b in range(2):
        o, c, f = group_by_segment(ids[b], num_segments=3)
        assert torch.equal(order[b], o) and torch.equal(counts[b], c) and torch.equal(offsets[b], f)


def test_pad_segments_one_sync_and_none_with_sizes():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(-1, 64, (12544,), generator=gen)  # seed 003: 64 frames
    values = torch.randn(12544, 8, generator=gen)
    with count_host_syncs() as syncs:
        padded, _ = pad_segments(values, ids)
    assert syncs.count == 1
    with count_host_syncs() as syncs:
        padded2, _ = pad_segments(values, ids, num_segments=64, max_len=padded.shape[1])
        group_by_segment(ids, num_segments=64)
    assert syncs.count == 0
    assert torch.equal(padded, padded2)


def test_pad_segments_allocates_no_feature_sized_buffer_but_its_output():
    """Seed 003's shapes (64 frames x 196 tokens, d = 256): a full(fill) base, a gathered copy
    of the values and an out-of-place index_copy made three feature-sized buffers (four passes
    over the data) and ran 2x slower than the per-segment torch.where loop it replaces
    (oracle round 7). The values are now gathered straight into the output."""
    from torch.utils._python_dispatch import TorchDispatchMode

    ids = torch.cat([torch.full((30,), -1), torch.arange(64).repeat_interleave(196)])
    values = torch.randn(ids.numel(), 256, generator=torch.Generator().manual_seed(0))
    big = 64 * 196 * 256 // 2

    class Buffers(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.storages = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.numel() >= big:
                    self.storages.add(t.untyped_storage().data_ptr())
            return out

    for sizes in ({}, {"num_segments": 64, "max_len": 196}):
        with Buffers() as buffers:
            padded, mask = pad_segments(values, ids, fill=-1.0, **sizes)
        own = {values.untyped_storage().data_ptr()}  # (views of the input)
        assert buffers.storages - own == {padded.untyped_storage().data_ptr()}
        assert torch.equal(padded[mask], values[30:]) and bool((padded[~mask] == -1).all())


def test_pad_segments_truncates_and_skips_out_of_range_ids():
    ids = torch.tensor([0, 0, 0, 1, 2])
    padded, mask = pad_segments(torch.arange(5.0), ids, num_segments=2, max_len=2)
    assert padded.tolist() == [[0.0, 1.0], [3.0, 0.0]]
    assert mask.tolist() == [[True, True], [True, False]]


def test_pad_segments_preserves_dtype_and_gradient():
    ids = torch.tensor([1, 0, 1])
    values = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    padded, mask = pad_segments(values, ids)
    assert padded.dtype == torch.float64
    (padded * torch.arange(padded.numel(), dtype=torch.float64).view_as(padded)).sum().backward()
    assert values.grad is not None and torch.isfinite(values.grad).all()
    assert torch.autograd.gradcheck(
        lambda v: pad_segments(v, ids)[0], (values.detach().requires_grad_(),)
    )
    half = pad_segments(torch.ones(3, dtype=torch.bfloat16), ids)[0]
    assert half.dtype == torch.bfloat16


def test_segments_errors_are_clear():
    with pytest.raises(TypeError, match="segment_ids must be an integer tensor"):
        group_by_segment(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="segment_ids must have at least 1 dimensions"):
        group_by_segment(torch.tensor(3))
    with pytest.raises(ValueError, match="values must have shape segment_ids.shape"):
        pad_segments(torch.zeros(4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="num_segments must be a non-negative int"):
        group_by_segment(torch.tensor([0]), num_segments=-1)


def test_default_max_len_is_the_largest_kept_segment():
    """Ids >= num_segments are no segment: their tokens do not size the padding."""
    padded, mask = pad_segments(torch.tensor([10.0, 11, 12, 13]), torch.tensor([0, 5, 5, 5]), 0, 1)
    assert padded.tolist() == [[10.0]] and mask.tolist() == [[True]]
    none_kept, _ = pad_segments(torch.arange(3.0), torch.tensor([1, 1, 2]), num_segments=0)
    assert none_kept.shape == (0, 0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(rows=ids_strategy, num_segments=st.integers(0, 5))
def test_given_num_segments_pads_to_the_longest_kept_segment(rows, num_segments):
    ids = torch.tensor(rows, dtype=torch.long)
    values = torch.randn(*ids.shape, 2, generator=torch.Generator().manual_seed(2))
    counts = [row.count(seg) for row in rows for seg in range(num_segments)]
    longest = max(counts, default=0)  # the largest kept segment of any row
    padded, mask = pad_segments(values, ids, num_segments=num_segments)
    assert padded.shape == (*ids.shape[:-1], num_segments, longest, 2)
    assert int(mask.sum()) == int(((ids >= 0) & (ids < num_segments)).sum())
    for result, reference in zip(
        (padded, mask), pad_segments_reference(values, ids, num_segments=num_segments)
    ):
        assert torch.equal(result, reference)


def test_a_fill_the_dtype_cannot_hold_is_an_error():
    ids = torch.tensor([0, 1, 0])
    bad = [
        (torch.uint8, -1),
        (torch.int8, 200),
        (torch.int64, 0.5),
        (torch.int32, math.inf),
        (torch.int64, math.nan),
        (torch.bool, 2),
        (torch.float16, 1e5),  # rounds to inf
    ]
    for dtype, fill in bad:
        with pytest.raises(ValueError, match=rf"fill={re.escape(repr(fill))} .*{dtype}"):
            pad_segments(torch.ones(3, dtype=dtype), ids, fill=fill)
    good = [
        (torch.uint8, 255),
        (torch.int64, -1),
        (torch.int64, 2.0),
        (torch.int8, True),
        (torch.bool, 0),
        (torch.bool, True),
        (torch.float16, -math.inf),
        (torch.bfloat16, math.nan),
        (torch.float32, 1e30),
    ]
    for dtype, fill in good:
        padded, _ = pad_segments(torch.ones(3, dtype=dtype), torch.tensor([0, 0, 1]), fill=fill)
        slot = float(padded[1, 1])
        if math.isnan(fill):
            assert math.isnan(slot)
        elif dtype.is_floating_point:  # rounded to a nearby value of the dtype
            assert math.isclose(slot, fill, rel_tol=1e-2)
        else:  # held exactly
            assert slot == fill


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_default_num_segments_is_max_id_plus_one_for_every_integer_dtype(dtype):
    """uint8 ids once gave 256 segments (the dtype's range) instead of max(id) + 1."""
    ids = torch.tensor([3, 1, 0, 2], dtype=dtype)
    order, counts, offsets = group_by_segment(ids)
    assert counts.tolist() == [1, 1, 1, 1]
    assert order.tolist() == [2, 1, 3, 0] and offsets.tolist() == [0, 1, 2, 3]
    padded, mask = pad_segments(torch.arange(4.0), ids)
    assert padded.shape == (4, 1) and bool(mask.all())


def test_sparse_ids_without_num_segments_raise_a_clear_error():
    """Ids such as [0, 10**12] once made the allocator try terabytes (a raw RuntimeError)."""
    ids = torch.tensor([0, 10**12])
    message = r"the largest segment id is 1000000000000.*pass num_segments.*return_inverse=True"
    with pytest.raises(ValueError, match=rf"group_by_segment: {message}"):
        group_by_segment(ids)
    with pytest.raises(ValueError, match=rf"pad_segments: {message}"):
        pad_segments(torch.ones(2), ids)
    with pytest.raises(ValueError, match="pad_segments: the largest segment id"):
        pad_segments(torch.ones(2), ids, max_len=1)
    # The bound is max(16 * number of ids, 2**20) segments; the sizes read stay one sync.
    at_bound = torch.tensor([0, 2**20 - 1])
    with count_host_syncs() as syncs:
        assert group_by_segment(at_bound)[1].shape == (2**20,)
    assert syncs.count == 1
    with pytest.raises(ValueError, match=r"2\*\*20\) = 1048576 for 2 ids"):
        group_by_segment(torch.tensor([0, 2**20]))
    many = torch.arange(2**17).repeat(1, 1)
    many[0, -1] = 16 * 2**17 - 1  # 16 segments per id: still allowed
    assert group_by_segment(many)[1].shape == (1, 16 * 2**17)
    with pytest.raises(ValueError, match="2097152 for 131072 ids"):
        group_by_segment(torch.cat([many[0, :-1], torch.tensor([16 * 2**17])]))
    # An explicit num_segments, or compacted ids, sizes the result by the segments present.
    assert group_by_segment(ids, num_segments=1)[1].tolist() == [1]
    compact = torch.unique(ids, return_inverse=True)[1]
    padded, _ = pad_segments(torch.tensor([1.0, 2.0]), compact)
    assert padded.tolist() == [[1.0], [2.0]]


def test_the_largest_int64_id_is_never_dropped_silently():
    big = torch.iinfo(torch.long).max
    ids = torch.tensor([0, 0, big, big, -1, 0])
    with pytest.raises(ValueError, match=r"pad_segments: the largest segment id is 9223372036854775807"):
        pad_segments(torch.arange(6.0), ids)
    with pytest.raises(ValueError, match=r"group_by_segment: the largest segment id"):
        group_by_segment(ids)
    padded, mask = pad_segments(torch.arange(6.0), ids, num_segments=1)  # ids >= S: left out
    assert padded.tolist() == [[0.0, 1.0, 5.0]] and mask.all()


def test_numpy_and_tensor_fills_are_checked_like_python_numbers():
    ids = torch.tensor([1, 0, 1, -1, 0, 1])
    for dtype, fill in [(torch.uint8, np.int64(-1)), (torch.int64, np.float32(0.5)),
                        (torch.float16, np.float32(1e5)), (torch.uint8, torch.tensor(-1))]:
        with pytest.raises(ValueError, match=rf"cannot be held by values' dtype {dtype}"):
            pad_segments(torch.ones(6, dtype=dtype), ids, fill=fill)
    padded, _ = pad_segments(torch.arange(6, dtype=torch.uint8), ids, fill=np.int64(7))
    assert padded[0, 2].item() == 7  # (segment 0 has two tokens: its third slot is padding)
    with pytest.raises(ValueError, match="fill must be one number"):
        pad_segments(torch.ones(6), ids, fill=torch.zeros(2))


def test_meta_ids_without_sizes_and_huge_uint64_ids_get_named_errors():
    meta = torch.ones(3, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="group_by_segment: segment_ids is a meta tensor"):
        group_by_segment(meta)
    with pytest.raises(ValueError, match="pass num_segments and max_len explicitly"):
        pad_segments(torch.ones(3, device="meta"), meta)
    order, counts, _ = group_by_segment(meta, num_segments=2)  # (sizes given: shapes only)
    assert counts.shape == (2,) and order.device.type == "meta"
    huge = torch.tensor([2**64 - 1, 1], dtype=torch.uint64)  # (not a negative, ignored id)
    with pytest.raises(ValueError, match="the largest segment id is 9223372036854775807"):
        group_by_segment(huge)
    assert group_by_segment(huge, num_segments=2)[1].tolist() == [0, 1]


def test_sizes_no_tensor_can_have_are_errors_naming_them():
    # num_segments = 2**63 was torch's "value cannot be converted to type int64_t without
    # overflow", 2**64 a bare OverflowError, and sizes whose product passes int64 the same.
    ids = torch.tensor([0, 1, 1, -1])
    with pytest.raises(ValueError, match=r"num_segments must be below 2\*\*62"):
        group_by_segment(ids, num_segments=2**63)
    with pytest.raises(ValueError, match=r"num_segments must be below 2\*\*62"):
        pad_segments(torch.ones(4), ids, num_segments=2**64, max_len=1)
    with pytest.raises(ValueError, match=r"max_len must be below 2\*\*62"):
        pad_segments(torch.ones(4), ids, num_segments=2, max_len=2**63)
    with pytest.raises(ValueError, match="num_segments=1099511627776 x max_len=1099511627776"):
        pad_segments(torch.ones(4), ids, num_segments=2**40, max_len=2**40)

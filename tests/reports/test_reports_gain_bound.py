"""An advice whose estimate is 0 with a range above it states the bound alone: padding-waste on
a text-classification pipeline's batches, already padded per batch and without the rows'
lengths, read 'Estimated gain: 0 ms per step (0% of the step), range 0 ms to 2.4 ms' (sorting
the texts by length measured 413 -> 316 ms per 192 texts; clients round 12)."""

from __future__ import annotations

from torchdoctor.analyze.advice.padding_waste import padding_waste
from torchdoctor.render.markdown import gain_text


def test_padding_mixed_in_batches_with_no_lengths_kept_is_told_as_a_bound():
    padding = {"positions": 800, "real": 486, "per_batch": 800}  # (no "lengths")
    steps = [{"index": i, "detailed": True, "wall_ms": 64.0, "phases": {"forward": 60.0},
              "padding": padding} for i in range(6)]  # fmt: skip
    (item,) = padding_waste({"steps": steps, "step_ms": {"median": 64.0}})
    assert not item.estimated_saving_ms and item.saving_range_ms[1] > 10.0
    text = gain_text(item.to_dict())
    assert text.startswith("not stated, up to ") and "range 0 ms" not in text

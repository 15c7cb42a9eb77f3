"""Merging one cause's entries: a bound-only entry (a CPU knob's "up to") that reaches above the
merged entry's range widens its top; the stated estimate stays the measured one."""

from __future__ import annotations

from torchdoctor.analyze.advice.base import Advice
from torchdoctor.analyze.advice.merge import one_per_cause


def _pair(knob_top):
    dominant = Advice("dominant-module", "features.2 (Conv2d) dominates the step",
                      cause="channels_last", estimated_saving_ms=0.08,
                      saving_range_ms=[0.08, 0.38], heat=0.6)  # fmt: skip
    knob = Advice("engine-knobs", "Use channels_last memory format for the conv net",
                  cause="channels_last", saving_range_ms=[0.0, knob_top], heat=0.2,
                  evidence=["up to 2.5x on its 11 depthwise convolutions"])  # fmt: skip
    knob.generic = True
    return one_per_cause([dominant, knob])


def test_a_bound_above_the_range_widens_its_top_and_keeps_the_estimate():
    """torchvision's mobilenet_v3_small: the depthwise convolutions' channels_last bound was
    dropped when it merged with the dominant convolution's advice."""
    (merged,) = _pair(1.69)
    assert merged.title.startswith("features.2")
    assert merged.estimated_saving_ms == 0.08 and merged.saving_range_ms == [0.08, 1.69]
    assert any("depthwise" in e for e in merged.evidence)


def test_a_bound_inside_the_range_changes_nothing():
    (merged,) = _pair(0.2)
    assert merged.estimated_saving_ms == 0.08 and merged.saving_range_ms == [0.08, 0.38]

"""The torch-syncs saving of turning distribution validation off: the lines' forward time with
the forward-only speedup (pytorch/examples' actor_critic was told 0.68 ms per 125-action step
from the forward + backward pair's 1.2x; turning validation off saved 7.4 ms, 17%)."""

from __future__ import annotations

import pytest

from torchdoctor.analyze.advice.base import SPEEDUPS
from torchdoctor.analyze.advice.torch_syncs import torch_syncs


def _session():
    line = {"file": "/w/actor_critic.py", "line": 89, "location": "actor_critic.py:89",
            "owner": "", "forward_ms": {"mean": 30.0}, "backward_ms": {"mean": 10.0},
            "total_ms": {"mean": 40.0}, "calls_per_step": 125, "torch_calls_per_step": 0,
            "top_ops": []}  # fmt: skip
    record = {"kind": "bool", "file": "/w/actor_critic.py", "line": 89, "per_step": 250.0,
              "op": "m = Categorical(probs)", "inside": "distributions/distribution.py:__init__"}
    return {"step_ms": {"mean": 45.0, "median": 45.0}, "hot_lines": {"lines": [line]},
            "syncs": [record]}  # fmt: skip


def test_validation_s_saving_is_the_forward_s_with_the_forward_only_speedup():
    (item,) = torch_syncs(_session())
    speed = SPEEDUPS["distribution_validation_forward"]
    assert item.saving_range_ms == pytest.approx([30.0 * (1 - 1 / speed.low),
                                                  30.0 * (1 - 1 / speed.high)])  # fmt: skip
    assert any("(their forward)" in e for e in item.evidence)
    assert item.estimated_saving_ms > 0.2 * 45.0  # (a fifth of the step, as measured)


def test_a_rollout_s_distributions_count_at_their_rate_over_the_run():
    """cleanrl's PPO builds a Normal per environment step in the rollout, which falls in one
    periodic (outlier) step between updates: the typical update step's line time, scaled by how
    often the line syncs over the whole run (7.3 per step against 2 in a typical step), prices
    the switch (it was 10x low on the typical step alone)."""
    session = _session()
    session["syncs"][0].update(per_step=7.3 * 125, typical_per_step=2.0 * 125, in_outlier_steps=1)
    (item,) = torch_syncs(session)
    speed = SPEEDUPS["distribution_validation_forward"]
    assert item.saving_range_ms == pytest.approx([30.0 * 3.65 * (1 - 1 / speed.low),
                                                  30.0 * 3.65 * (1 - 1 / speed.high)])  # fmt: skip
    assert any("with the calls of the periodic steps" in e for e in item.evidence)
    # a line that syncs only in periodic steps: its time there is unmeasured, the typical kept
    session["syncs"][0].update(typical_per_step=0.0)
    (item,) = torch_syncs(session)
    assert item.saving_range_ms[0] == pytest.approx(30.0 * (1 - 1 / speed.low))


def test_episodes_longer_than_the_detailed_ones_weigh_the_checks_by_their_calls():
    """pytorch/examples reinforce: a step is an episode; the detail windows fell on early,
    short episodes (93 policy calls) while the run's averaged 288; the checks come per call
    (stated 1.87 ms a step, measured 26 ms with validation off)."""
    session = _session()
    session["steps"] = [{"index": i, "wall_ms": 45.0, "model_calls": 125 if i < 6 else 375,
                         "detailed": i < 6} for i in range(60)]  # fmt: skip
    (item,) = torch_syncs(session)
    speed = SPEEDUPS["distribution_validation_forward"]
    factor = (6 * 125 + 54 * 375) / 60 / 125
    assert item.saving_range_ms == pytest.approx([30.0 * factor * (1 - 1 / speed.low),
                                                  30.0 * factor * (1 - 1 / speed.high)])  # fmt: skip
    assert any("the model calls per step of the detailed steps" in e for e in item.evidence)

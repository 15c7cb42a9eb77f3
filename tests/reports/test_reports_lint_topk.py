"""A full sort read only up to k (TD512) on a measured line states the saving of torch.topk
from the suite's benchmarked speedup (PointNet++'s ball query, `group_idx.sort(dim=-1)[0][:, :,
:nsample]`, 101 ms of a 7.2 s step: "not measurable from this run" before; topk measured 112
-> 38 ms a step there)."""

from __future__ import annotations

import pytest

from torchdoctor.analyze.advice.lint_hot import lint_findings


def _session(line_ms: float) -> dict:
    row = {"file": "/w/pointnet2_utils.py", "line": 103, "location": "pointnet2_utils.py:103",
           "function": "query_ball_point", "owner": "",
           "code": "group_idx = group_idx.sort(dim=-1)[0][:, :, :nsample]",
           "forward_ms": {"mean": line_ms}, "backward_ms": {"mean": 0.0},
           "total_ms": {"mean": line_ms}, "calls_per_step": 2.0, "torch_calls_per_step": 4.0,
           "top_ops": [{"op": "Tensor.sort", "forward_ms": line_ms, "calls_per_step": 2.0}]}  # fmt: skip
    finding = {"code": "TD512", "severity": "warning", "path": "/w/pointnet2_utils.py",
               "line": 103, "replacement": None,
               "message": "`group_idx.sort(dim=-1)` sorts every element, and only the first "
               "nsample are read: torch.topk(..., nsample, largest=False) selects them"}  # fmt: skip
    return {"step_ms": {"mean": 100.0}, "hot_lines": {"steps": 3, "lines": [row]},
            "lint": [finding]}  # fmt: skip


def test_a_sort_read_up_to_k_on_a_measured_line_states_topks_saving():
    (item,) = [a for a in lint_findings(_session(1.5)) if "TD512" in a.title]
    assert "on a measured line (pointnet2_utils.py:103)" in item.title
    assert item.estimated_saving_ms == pytest.approx(1.5 * (1 - 1 / 4.6), rel=0.02)
    assert item.saving_range_ms[1] == pytest.approx(1.5 * (1 - 1 / 31.7), rel=0.02)
    assert "torch.topk" in item.fix
    assert any("4.6x-31.7x" in e for e in item.evidence)  # the benchmarked speedup, said


def test_a_sort_on_a_negligible_line_stays_cold_with_no_saving():
    (item,) = [a for a in lint_findings(_session(0.5)) if "TD512" in a.title]  # 0.5% of the step
    assert item.heat == 0.0 and item.estimated_saving_ms is None

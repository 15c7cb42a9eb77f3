"""A lint finding about a backward's cost (``Rule.backward_only``: TD307's zero gradient per
slice) is left out of a run with no backward: timm's inference.py was told TD307 on
`all_outputs[:, i]`, a NumPy array's slices after a no_grad evaluation (clients round 15)."""

from __future__ import annotations

from torchdoctor.analyze.advice import advise
from torchdoctor.lint.registry import RULES

TD307 = {"code": "TD307", "severity": "warning", "path": "/x/infer.py", "line": 33,
         "message": "`all_outputs[:, i]` is sliced at the loop variable"}  # fmt: skip


def _session(backward_ms: float, hot: bool) -> dict:
    row = {"file": "/x/infer.py", "line": 33, "location": "infer.py:33", "function": "main",
           "function_line": 10, "code": "out = all_outputs[:, i]", "owner": "",
           "owner_kind": "root", "forward_ms": {"median": 30.0, "mean": 30.0},
           "backward_ms": {"median": 0.0, "mean": 0.0}, "total_ms": {"median": 30.0, "mean": 30.0},
           "calls_per_step": 1.0, "torch_calls_per_step": 1.0,
           "top_ops": [{"op": "Tensor.__getitem__", "forward_ms": 30.0, "backward_ms": 0.0,
                        "calls_per_step": 1.0}]}  # fmt: skip
    return {
        "step_ms": {"median": 100.0, "mean": 100.0},
        "phases": {"forward": {"median": 90.0}, "backward": {"median": backward_ms}},
        "tree": {"path": "", "kind": "root", "total_ms": {"median": 100.0, "mean": 100.0},
                 "forward_ms": {"median": 90.0, "mean": 90.0}, "children": []},
        "hot_lines": {"steps": 3, "lines": [row] if hot else []},
        "lint": [dict(TD307)],
    }  # fmt: skip


def _mentions(session: dict) -> bool:
    return any("TD307" in " ".join([a.title, *a.evidence, *a.references]) for a in advise(session))


def test_td307_is_a_backward_cost_only():
    assert RULES["TD307"].backward_only and not RULES["TD201"].backward_only


def test_a_backward_only_finding_is_left_out_of_a_run_without_backward():
    for hot in (True, False):
        assert not _mentions(_session(backward_ms=0.0, hot=hot)), hot
        assert _mentions(_session(backward_ms=40.0, hot=hot)), hot

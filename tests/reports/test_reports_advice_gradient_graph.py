"""A PINN's residual takes derivatives with create_graph=True, then backward runs through
them: the tree charged that backward (18 of a 31 ms step, measured) to the first Linear, the
module the gradients were taken through, and the advice read "make the matmul cheaper"."""

from __future__ import annotations

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.dominant import dominant_module


def _session(double_backward: bool, fwd: float = 0.4, bwd: float = 10.8) -> dict:
    def leaf(i, f, b, kind="Linear"):
        return {"path": f"net.{i}", "name": str(i), "kind": "module", "type": kind,
                "calls_per_step": 2.0, "forward_ms": {"mean": f}, "backward_ms": {"mean": b},
                "total_ms": {"mean": f + b}, "children": []}  # fmt: skip
    net = {"path": "net", "name": "net", "kind": "module", "type": "Sequential",
           "total_ms": {"mean": 24.0}, "forward_ms": {"mean": 2.0}, "backward_ms": {"mean": 22.0},
           "children": [leaf(0, fwd, bwd), leaf(1, 0.6, 10.4, "Tanh"), leaf(2, 0.5, 0.4)]}  # fmt: skip
    tree = {"kind": "root", "path": "", "total_ms": {"mean": 30.0}, "children": [net]}
    knobs = {"double_backward": "pinn.py:7"} if double_backward else {}
    return {"step_ms": {"median": 30.0, "mean": 30.0}, "tree": tree,
            "environment": {"device": "cpu", "knobs": knobs},
            "grad_passes": [{"location": "pinn.py:9", "passes_per_step": 1.0, "ms_per_step": 4.0},
                            {"location": "pinn.py:7", "passes_per_step": 1.0,
                             "ms_per_step": 1.7}]}  # fmt: skip


def test_the_backward_through_gradients_is_no_modules_own():
    items = [a for a in advise(_session(True)) if a.rule == "dominant-module"]
    (item,) = items  # (one advice for the two modules the tree charged)
    assert item.title.startswith("net.0 holds the backward through the gradients taken with "
                                 "create_graph=True (pinn.py:7)")  # fmt: skip
    assert "pinn.py:9 1 a step, 4 ms" in item.evidence[1]
    assert "matmul" not in item.title and item.estimated_saving_ms is None


def test_without_a_double_backward_or_with_a_forward_to_match_the_remedy_stays():
    plain = dominant_module(_session(False))
    assert plain and all("create_graph" not in a.title for a in plain)
    balanced = dominant_module(_session(True, fwd=5.0, bwd=6.0))
    assert any(a.title.startswith("net.0") and "create_graph" not in a.title for a in balanced)

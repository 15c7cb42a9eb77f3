"""An inference loop that copies each batch's outputs to the host (timm's inference.py:
``all_outputs.append(output.float().cpu().numpy())``) is told to copy once after the loop, not
to keep metrics on the device: its copies are its results."""

from __future__ import annotations

from torchdoctor.analyze.advice.syncs import host_syncs


def _session(backward_ms: float, kind: str = "cpu") -> dict:
    record = {"kind": kind, "op": "output.float().cpu()", "file": "/x/inference.py",
              "line": 308, "count": 30, "per_step": 1.0, "phase": "other", "stall_ms": 2.0}  # fmt: skip
    return {"syncs": [record], "step_ms": {"median": 10.0},
            "phases": {"forward": {"mean": 9.0}, "backward": {"mean": backward_ms}},
            "environment": {"device": "cuda:0"}}  # fmt: skip


def test_an_inference_loops_host_copies_are_told_to_happen_once():
    (advice,) = host_syncs(_session(backward_ms=0.0))
    assert advice.title == "Copy the outputs to the host once, not every batch"
    assert "torch.cat(outputs).cpu()" in advice.fix and "LazyMetrics" not in advice.fix
    assert advice.estimated_saving_ms == 2.0  # the measured stall


def test_a_training_loop_or_a_scalar_read_keeps_the_metrics_advice():
    (training,) = host_syncs(_session(backward_ms=5.0))
    assert training.title.startswith("Keep per-step scalars on the device")
    (scalar,) = host_syncs(_session(backward_ms=0.0, kind="item"))
    assert scalar.title.startswith("Keep per-step scalars on the device")

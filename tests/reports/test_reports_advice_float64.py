"""Rule float64-training: its evidence names the phases the steps shown hold."""

from torchdoctor.analyze.advice.float64 import float64_training


def _session(phases):
    return {"environment": {"optimizers": [{"dtype": "float64", "type": "LBFGS", "numel": 51_000}]},
            "step_ms": {"median": 1708.0}, "tree": {"total_ms": {"median": 1708.0}},
            "phases": {name: {"median": ms} for name, ms in phases.items()}}  # fmt: skip


def test_the_float64_evidence_names_only_the_phases_the_steps_hold():
    """time_sequence_prediction run for one LBFGS step: that step was the warm-up, and the step
    shown is the no_grad prediction after it (forward 1,465 ms, no backward, no update): its
    evidence read 'forward + backward + optimizer: 1,465 ms'."""
    (item,) = float64_training(_session({"forward": 1465.0, "backward": 0.0, "optimizer": 0.0}))
    assert item.evidence[1].startswith("forward: 1,465 ms per step")
    (item,) = float64_training(_session({"forward": 400.0, "backward": 800.0, "optimizer": 8.0}))
    assert item.evidence[1].startswith("forward + backward + optimizer: 1,208 ms per step")

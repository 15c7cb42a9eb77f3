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


def test_the_lines_that_ask_for_float64_are_named_in_the_fix():
    """time_sequence_prediction's forward makes its LSTM states with dtype=torch.double: told
    only "drop the .double() calls", the float32 model then failed on mixed dtypes."""
    def row(line, code):
        return {"file": "/w/train.py", "line": line, "location": f"train.py:{line}", "owner": "",
                "code": code, "total_ms": {"mean": 5.0}, "forward_ms": {"mean": 5.0},
                "backward_ms": {"mean": 0.0}, "calls_per_step": 1, "torch_calls_per_step": 1,
                "top_ops": []}  # fmt: skip

    session = _session({"forward": 400.0, "backward": 800.0, "optimizer": 8.0})
    session["hot_lines"] = {"lines": [
        row(54, "seq.double()"), row(20, "h_t = torch.zeros(n, 51, dtype=torch.double)"),
        row(30, "out = self.linear(h_t2)")]}  # fmt: skip
    (item,) = float64_training(session)
    assert "(here train.py:20, train.py:54)" in item.fix and "dtype=input.dtype" in item.fix
    assert item.locations == ["train.py:20", "train.py:54"]
    assert "train.py:30" not in item.evidence[-1]


def test_a_float64_default_dtype_is_named_in_the_fix_not_double_calls():
    """odd2's s_dtype_device_det: torch.set_default_dtype(torch.float64), no .double() anywhere,
    was told "Drop the .double() calls"; a model made double by .double() keeps that fix."""
    session = _session({"forward": 400.0, "backward": 800.0, "optimizer": 8.0})
    session["environment"]["optimizers"][0]["default_dtype"] = "float64"
    (item,) = float64_training(session)
    assert item.fix.startswith("Set the default dtype back to float32")
    assert "Drop the .double() calls" not in item.fix and "set_default_dtype" in item.code
    assert "default dtype was float64" in item.evidence[-1]
    session["environment"]["optimizers"][0]["default_dtype"] = "float32"  # (near miss)
    (item,) = float64_training(session)
    assert item.fix.startswith("Drop the .double() calls") and ".double()" in item.code


def test_the_optimizer_settings_record_the_default_dtype():
    import torch

    from torchdoctor.collect.engine_state import optimizer_settings

    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        net = torch.nn.Linear(2, 2)
        settings = optimizer_settings(torch.optim.SGD(net.parameters(), lr=0.1))
    finally:
        torch.set_default_dtype(before)
    assert settings["dtype"] == "float64" and settings["default_dtype"] == "float64"

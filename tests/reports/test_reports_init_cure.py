"""A hot line whose time is weight initialisation gets the build-once cure."""

from torchdoctor.analyze.advice.hot_lines_cures import cure_for


def _row(ops, total):
    return {"total_ms": {"median": total}, "calls_per_step": 1, "torch_calls_per_step": 24,
            "forward_ms": total, "top_ops": ops}  # fmt: skip


def test_a_model_rebuilt_every_step_is_told_to_build_it_once():
    # an inference loop calling build() per input: kaiming_uniform_ is 2.17 of the line's 2.3 ms
    row = _row([{"op": "torch.kaiming_uniform_", "forward_ms": 2.17, "calls_per_step": 3},
                {"op": "torch.uniform_", "forward_ms": 0.07, "calls_per_step": 3}], 2.3)  # fmt: skip
    cure = cure_for(row, [])
    assert cure is not None and cure.name == "build the module once"
    assert 1 / (1 - 0.95) >= cure.speedup.low > 10  # (the initialisers' share, capped at 95%)
    assert "97%" in cure.speedup.source or "95%" in cure.speedup.source


def test_a_line_whose_initialisers_are_a_minor_part_keeps_its_other_cure():
    row = _row([{"op": "torch.mm", "forward_ms": 2.0, "calls_per_step": 1},
                {"op": "torch.normal_", "forward_ms": 0.3, "calls_per_step": 1}], 2.3)  # fmt: skip
    cure = cure_for(row, [])
    assert cure is None or cure.name != "build the module once"

"""Advice sized from the calls it removes, as clients round 13 ran them (pytorch/examples GAT)."""

from __future__ import annotations

from torchdoctor.analyze.advice.recompute import loop_invariant

MAIN = "/w/gat/main.py"


def _gat_session(call_lines: list[dict]) -> dict:
    # one training forward (line 262), then two evaluations under no_grad (line 280), the second
    # identical to the first: the module's mean per call mixes the training forward in
    record = {
        "path": "GAT", "calls_per_step": 3.0, "identical_input_calls": 1.0,
        "time_per_call_ms": 1368.0, "source": {"file": MAIN, "line": 184},
        "call_site": {"file": MAIN, "line": 262, "function": "train_iter"},
        "repeat_site": {"file": MAIN, "line": 280, "function": "test"},
    }
    return {"recomputation": [record], "step_ms": {"median": 5000.0}, "call_lines": call_lines}


def test_a_repeated_evaluation_call_is_sized_by_its_own_line_not_the_mean_with_training():
    lines = [
        {"file": MAIN, "line": 262, "modules": ["GAT"], "ms_per_step": 2544.0,
         "calls_per_step": 1.0},
        {"file": MAIN, "line": 280, "modules": ["GAT"], "ms_per_step": 1560.0,
         "calls_per_step": 2.0},
    ]
    (advice,) = loop_invariant(_gat_session(lines))
    assert round(advice.estimated_saving_ms) == 780
    assert any("780 ms per call" in e and "1,368 ms" in e for e in advice.evidence)


def test_without_the_repeating_lines_measure_the_modules_mean_per_call_stays():
    (advice,) = loop_invariant(_gat_session([]))
    assert round(advice.estimated_saving_ms) == 1368


def test_a_repeating_line_that_calls_other_modules_too_is_not_used():
    lines = [{"file": MAIN, "line": 280, "modules": ["GAT", "criterion"], "ms_per_step": 1560.0,
              "calls_per_step": 2.0}]
    (advice,) = loop_invariant(_gat_session(lines))
    assert round(advice.estimated_saving_ms) == 1368

"""Rule ``dropout``: a dozen small dropout modules that together take a sizable share of a
training step (a tiny T5: 23 of 92 ms in bernoulli_) get one advice with their measured time."""

from __future__ import annotations

from reports_sessions import node

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.dropout_share import dropout_share


def _session(dropout_ms: float) -> dict:
    layers = []
    for i in range(6):
        drop = node(f"encoder.block.{i}.dropout", dropout_ms / 9, dropout_ms / 18, type="Dropout")
        ff = node(f"encoder.block.{i}.ff", 8.0, 4.0, type="Linear")
        layers.append(node(f"encoder.block.{i}", 8.0 + dropout_ms / 6, 4.0, type="T5Block",
                           children=[drop, ff]))  # fmt: skip
    total = 48.0 + dropout_ms
    root = node("", total, 24.0, kind="root", children=[
        node("encoder", total, 24.0, type="T5Stack", children=layers)])  # fmt: skip
    return {"step_ms": {"median": total + 10.0}, "tree": root}


def test_many_small_dropouts_adding_up_get_one_advice_with_their_measured_time():
    (item,) = dropout_share(_session(24.0))
    assert item.rule == "dropout" and "dropout takes" in item.title
    assert "6 dropout modules" in item.evidence[0]
    assert item.estimated_saving_ms == 24.0 and item.saving_range_ms == (12.0, 24.0)
    assert any(a.rule == "dropout" for a in advise(_session(24.0)))


def test_a_few_percent_of_dropout_is_left_alone():
    assert dropout_share(_session(3.0)) == []


def test_the_saving_is_of_the_step_without_the_profiler():
    # minGPT's chargpt (clients round 14): dropout modules 574 ms of 4,033 ms detailed steps,
    # 2,965 ms of them the profiler's; told 574 ms of the step, 155 ms measured with dropout 0
    session = _session(24.0)
    tree_step = session["tree"]["total_ms"]["median"]  # (the detailed steps: 96 ms)
    session["config"] = {"steps": 100, "detail": {"detailed_count": 10},
                         "profiler_overhead": {"overhead_ms": tree_step / 2}}  # fmt: skip
    (item,) = dropout_share(session)
    assert "25% of the step" in item.title  # (a share of the detailed steps, as measured)
    assert item.estimated_saving_ms == 12.0 and item.saving_range_ms == (6.0, 12.0)

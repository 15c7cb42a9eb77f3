"""Rule periodic-steps on an inference loop whose long steps are its batched calls: a Hugging
Face text-classification pipeline called on 600 texts one at a time (inputs [1, 6] to [1, 25]),
then on the list with batch_size=32 (19 calls of [32, 25]). The batched calls were told as
'other inputs ([1, 11], [1, 10], [1, 13] against [1, 12])', with half of their extra time as
the saving, ranked first (clients round 12)."""

from __future__ import annotations

from torchdoctor.analyze.advice.periodic_steps import periodic_steps


def _pipeline_session():
    steps = []
    for i in range(600):
        length = 6 + (i * 7) % 20
        wall = 12.5 if i in (230, 233, 459, 597) else 5.0 + 0.03 * length  # (4 stalls)
        steps.append({"index": i, "wall_ms": wall, "input_shape": [1, length], "detailed": False,
                      "phases": {"forward": wall - 0.4, "other": 0.4}})  # fmt: skip
    for i in range(600, 619):
        steps.append({"index": i, "wall_ms": 64.0, "input_shape": [32, 25], "detailed": False,
                      "phases": {"forward": 63.6, "other": 0.4}})  # fmt: skip
    return {"steps": steps, "config": {"step_boundary": "module"}}


def test_long_steps_that_are_larger_batches_are_told_as_such_and_not_as_a_saving():
    (item,) = periodic_steps(_pipeline_session())
    assert "larger batches ([32, 25] against [1, " in item.title
    assert "[1, 1" not in item.title.split("larger batches")[1].split("against")[0]
    (told,) = [e for e in item.evidence if e.startswith("19 of the 23 long steps")]
    assert "batches of 32 samples against 1: 2 ms a sample against" in told
    assert told.endswith("(batched, the model costs less per sample)")
    assert item.fix.startswith("Some of these steps run the model on larger batches")
    # the saving: the 4 stalls' extra time alone, not the batched calls' (19 x ~59 ms)
    stalls = sum(12.5 - 5.0 - 0.03 * (6 + (i * 7) % 20) for i in (230, 233, 459, 597))
    assert item.estimated_saving_ms < stalls / 619

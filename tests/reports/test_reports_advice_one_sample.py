"""An inference loop that calls the model on one sample at a time is told to batch: a Hugging
Face pipeline called per text (300 texts: 1.78-2.03 s one at a time, 0.94-0.95 s with
batch_size=32, same labels) gets the pipeline's own batching; other loops a generic batch."""

from __future__ import annotations

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.one_sample import one_sample_per_call


def _steps(first_dim=1, backward=0.0, count=40):
    return [{"index": i, "input_shape": [first_dim, 20 + i * 13 % 29], "wall_ms": 8.0,
             "phases": {"backward": backward}} for i in range(count)]  # fmt: skip


PIPELINE_ROW = {"location": "classify.py:10", "inside": [
    {"file": "/v/lib/python3.11/site-packages/transformers/pipelines/base.py", "line": 1331}]}
CALL_LINE = {"file": "/w/classify.py", "line": 10, "location": "classify.py:10",
             "code": 'results.append(clf(text)[0]["label"])', "ms_per_step": 7.0}


def test_a_pipeline_called_per_text_is_told_to_pass_the_list():
    session = {"steps": _steps(), "step_ms": {"median": 8.0}, "other_lines": [PIPELINE_ROW],
               "call_lines": [CALL_LINE]}  # fmt: skip
    (item,) = one_sample_per_call(session)
    assert item.title == "The model runs one sample per call: batch the inputs"
    assert "in 40 of 40 steps" in item.evidence[0] and "29 different shapes" in item.evidence[0]
    assert "clf(texts, batch_size=32)" in item.fix and "batch_size=32" in item.code
    assert item.locations == ["/w/classify.py:10"] and item.estimated_saving_ms is None
    assert any("classify.py:10" in e for e in item.evidence)
    ranked = [a.rule for a in advise(session)]
    assert "one-sample-per-call" in ranked


def test_any_other_loop_gets_the_generic_batching():
    (item,) = one_sample_per_call({"steps": _steps(), "step_ms": {"median": 8.0}})
    assert "torch.stack" in item.fix or "DataLoader" in item.fix
    assert "pipeline" not in item.fix


def test_a_denoising_loop_is_told_its_steps_cannot_be_batched_only_its_samples():
    """The diffusers quicktour's loop, one image: `model(input, t)` per timestep, each step's
    input the previous one's output, was told to stack its inputs with a DataLoader."""
    (item,) = one_sample_per_call({"steps": _steps(), "step_ms": {"median": 700.0}})
    assert "cannot batch its steps" in item.fix and "independent samples" in item.fix


def test_batches_training_and_short_runs_are_left_alone():
    assert one_sample_per_call({"steps": _steps(first_dim=8)}) == []
    assert one_sample_per_call({"steps": _steps(backward=3.0)}) == []  # (training: batch 1 is
    assert one_sample_per_call({"steps": _steps(count=10)}) == []  # a choice, not a loop)
    mixed = _steps()
    for step in mixed[::4]:
        step["input_shape"] = [16, 20]  # 25% of the steps batched, between the others: no
    assert one_sample_per_call({"steps": mixed}) == []  # per-sample loop (3 in a row at most)


def test_a_phase_of_one_row_calls_after_batched_ones_is_told_to_batch():
    """sentence-transformers' semantic search: the corpus encoded in 11 batches, then 20
    queries one call each (20 of 31 steps, under the 90% a whole run needs): unadvised. A run
    of 20 one-row steps in a row is a per-sample loop of its own; one taking under a tenth
    of the steps' time is left alone."""
    batched = [{"input_shape": [32, 40], "wall_ms": 9.0, "phases": {}} for _ in range(11)]
    queries = _steps(count=20)
    batches = {**CALL_LINE, "line": 5, "location": "classify.py:5", "calls_per_step": 0.3}
    lines = [batches, {**CALL_LINE, "ms_per_step": 3.0, "calls_per_step": 0.6}]
    (item,) = one_sample_per_call({"steps": batched + queries, "step_ms": {"median": 9.0},
                                   "call_lines": lines})  # fmt: skip
    assert "in 20 of 31 steps (steps 12 to 31, in a row, after batched ones)" in item.evidence[0]
    assert "torch.stack" in item.fix and "8 ms per call" in item.evidence[1]  # (the queries')
    assert item.locations == ["/w/classify.py:10"]  # (called most; the heaviest: batches')
    cheap = [dict(q, wall_ms=0.3) for q in queries]  # (6 of the 105 ms of all steps)
    assert one_sample_per_call({"steps": batched + cheap}) == []
    assert one_sample_per_call({"steps": batched + queries[:15] + batched}) == []  # (15 in a row)


def test_token_by_token_generation_of_one_sequence_is_no_per_sample_loop():
    cached = [{"input_shape": [1, 1], "phases": {}} for _ in range(40)]
    growing = [{"input_shape": [1, 12 + i], "phases": {}} for i in range(40)]
    assert one_sample_per_call({"steps": cached}) == []
    assert one_sample_per_call({"steps": growing}) == []  # (decode-without-cache's case)
    # nanoGPT's sample.py: one sample of 200 tokens, the sequence cropped to 64 once it is
    # that long (62 growing pairs of 199: under half, a window nonetheless)
    windowed = [{"input_shape": [1, min(n, 64)], "phases": {}} for n in range(1, 201)]
    assert one_sample_per_call({"steps": windowed}) == []


def test_sequences_decoded_one_after_another_are_told_to_decode_as_one_batch():
    """nanoGPT's sample.py generates num_samples sequences in a loop, each of batch 1: the
    advice is one batch of them (idx.repeat), not a DataLoader."""
    three = [{"input_shape": [1, min(n, 64)], "phases": {}} for _ in range(3)
             for n in range(1, 201)]  # fmt: skip
    (item,) = one_sample_per_call({"steps": three, "call_lines": [CALL_LINE]})
    assert item.title.startswith("3 sequences were generated one after another")
    assert "idx.repeat(n, 1)" in item.fix and "DataLoader" not in item.fix
    # worded for any generation, not only a language model's prompts: an encoder-decoder
    # transcribing clips one at a time (Whisper) batches its sources
    assert "encoder-decoder" in item.fix and "input_features" in item.fix
    assert "idx" not in item.code and "torch.cat(inputs)" in item.code
    assert "3 sequences one after another" in item.evidence[0]
    cached = [{"input_shape": [1, 1 if k else 9], "phases": {}} for _ in range(4) for k in range(25)]
    (item,) = one_sample_per_call({"steps": cached})  # a KV cache: one prompt call each
    assert item.title.startswith("4 sequences")
    assert one_sample_per_call({"steps": cached[:25]}) == []  # one sequence
    batched = [{"input_shape": [4, n], "phases": {}} for _ in range(3) for n in range(1, 60)]
    assert one_sample_per_call({"steps": batched}) == []  # rows already batched
    # ... unless the call says they are one prompt's beams (prompts beam-searched one by one:
    # 2.4x faster batched, measured on Hugging Face's generate with num_beams=4)
    beams = {**CALL_LINE, "code": "out = model.generate(ids, num_beams=4, max_new_tokens=20)"}
    (item,) = one_sample_per_call({"steps": batched, "call_lines": [beams]})
    assert "4 rows per call (one prompt's beams or samples)" in item.title


def test_a_one_dimensional_input_is_one_sample_unbatched():
    """A policy evaluated per observation, `policy(torch.as_tensor(obs))` with a CartPole
    observation of 4 features: the input is [4], one sample with no batch dimension."""
    steps = [{"index": i, "input_shape": [4], "wall_ms": 1.0, "phases": {}} for i in range(40)]
    (item,) = one_sample_per_call({"steps": steps, "step_ms": {"median": 1.0}})
    assert "[4] (one sample, unbatched) in 40 of 40 steps" in item.evidence[0]


def test_the_calls_of_a_line_count_a_one_dimensional_input_as_one_sample():
    import torch

    from torchdoctor.collect.call_lines import leading_dim

    assert leading_dim((torch.zeros(4),)) == 1 and leading_dim((torch.zeros(8, 4),)) == 8
    assert leading_dim((torch.tensor(3.0),)) is None


def test_inputs_of_very_different_lengths_are_told_to_batch_by_length():
    # a sentiment pipeline over texts of 10 to 162 tokens on a CPU: batch_size=32 as they came
    # took 15.2-16.6 s of CPU time against 14.8-14.9 s one by one (each batch padded to its longest)
    steps = [{"index": i, "input_shape": [1, (10, 22, 42, 82, 162)[i % 5]], "wall_ms": 8.0,
              "phases": {"backward": 0.0}} for i in range(40)]  # fmt: skip
    session = {"steps": steps, "step_ms": {"median": 8.0}, "other_lines": [PIPELINE_ROW],
               "call_lines": [CALL_LINE]}  # fmt: skip
    (item,) = one_sample_per_call(session)
    assert any(e.startswith("their lengths run from 10 to 162") for e in item.evidence)
    assert "clf(texts, batch_size=32)" in item.fix and "similar length" in item.fix
    # near miss: lengths 20 to 48 (the other tests' steps) batch with little padding
    (near,) = one_sample_per_call({"steps": _steps(), "step_ms": {"median": 8.0}})
    assert "similar length" not in near.fix and not any("lengths run" in e for e in near.evidence)

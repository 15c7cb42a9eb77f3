"""The padding-waste rule: which remedy applies, what it removes, and its silence."""

from __future__ import annotations

import pytest
from reports_sessions_crafted import padding_session

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.padding_waste import padding_waste


def _share(session):
    steps = session["steps"]
    return 1 - sum(s["padding"]["real"] for s in steps) / sum(s["padding"]["positions"] for s in steps)


def _grouped(session):
    """The 24 rows sorted into batches of 4, each padded to its longest: positions removed."""
    lengths = sorted(n for s in session["steps"] for n in s["padding"]["lengths"])
    after = sum(max(lengths[i:i + 4]) * 4 for i in range(0, 24, 4))
    return 1 - after / sum(s["padding"]["positions"] for s in session["steps"])


def test_fixed_padding_is_told_to_pad_per_batch_then_group_with_both_shares():
    session = padding_session(pad_to=64)
    (item,) = padding_waste(session)
    steps = session["steps"]
    removed = 1 - sum(s["padding"]["per_batch"] for s in steps) / sum(
        s["padding"]["positions"] for s in steps)
    assert removed > 0.05
    evidence = " ".join(item.evidence)
    assert f"padding each to its own longest removes {100 * removed:.0f}%" in evidence
    assert f"{removed * 80.0:.3g} ms per step" in evidence  # (of the 80 ms fwd + bwd)
    assert item.estimated_saving_ms == pytest.approx(_grouped(session) * 80.0)  # the whole fix
    assert "pad each batch to its longest" in item.title and "similar lengths" in item.title
    assert "pad_sequence" in item.fix and "group" in item.fix
    assert f"{100 * _share(session):.0f}%" in item.title


def test_without_row_lengths_the_saving_is_the_per_batch_share_up_to_all_padding():
    session = padding_session(pad_to=64)
    for step in session["steps"]:
        del step["padding"]["lengths"]
    (item,) = padding_waste(session)
    steps = session["steps"]
    removed = 1 - sum(s["padding"]["per_batch"] for s in steps) / sum(
        s["padding"]["positions"] for s in steps)
    assert item.estimated_saving_ms == pytest.approx(removed * 80.0)
    assert item.saving_range_ms == pytest.approx([removed * 80.0, _share(session) * 80.0])
    assert "up to" in " ".join(item.evidence)


def test_per_batch_padding_is_told_to_group_lengths_with_a_simulated_saving():
    session = padding_session(pad_to=None)
    (item,) = padding_waste(session)
    assert "similar length" in item.title
    assert "already" in " ".join(item.evidence)
    assert item.estimated_saving_ms == pytest.approx(_grouped(session) * 80.0)
    assert item.estimated_saving_ms < _share(session) * 80.0  # (grouping leaves some padding)


def test_the_trainer_gets_its_own_switch():
    (item,) = padding_waste(padding_session(pad_to=None, trainer=True))
    assert "group_by_length=True" in item.fix and item.code and "group_by_length" in item.code


def test_little_padding_says_nothing():
    session = padding_session(pad_to=None)
    for step in session["steps"]:
        step["padding"]["lengths"] = [60, 61, 62, 64]
        step["padding"].update(real=247, positions=256, per_batch=256)
    assert padding_waste(session) == []


def test_padding_in_a_few_steps_of_many_counts_for_those_only():
    """A generate() loop pads its prompts in the prefill steps only: the saving is theirs."""
    session = padding_session(pad_to=64)
    full = padding_waste(session)[0].estimated_saving_ms
    decode = [{"index": 6 + i, "wall_ms": 100.0, "detailed": True, "phases": {"forward": 80.0}}
              for i in range(18)]
    session["steps"] = session["steps"] + decode
    (item,) = padding_waste(session)
    assert item.estimated_saving_ms == pytest.approx(full * 6 / 24)
    assert "of those steps" in " ".join(item.evidence)


def test_malformed_padding_entries_are_ignored():
    session = padding_session()
    for step in session["steps"]:
        step["padding"] = [1, 2, 3]
    assert padding_waste(session) == []


def test_the_advice_ranks_with_the_others():
    assert any(a.rule == "padding-waste" for a in advise(padding_session()))


def test_transformers_5_gets_its_sampling_strategy_switch():
    session = padding_session(pad_to=None, trainer=True)
    session["environment"]["frameworks"] = {"transformers": "5.25.0"}
    (item,) = padding_waste(session)
    assert 'train_sampling_strategy="group_by_length"' in item.fix
    assert "group_by_length=True" not in item.fix and "train_sampling_strategy" in item.code


def test_padded_batches_are_not_told_to_drop_their_attention_mask():
    """A T5 Seq2Seq run, 29% padding: transformers' all-ones mask test was titled "no
    attention_mask in batches without padding", a switch its padded batches cannot take."""
    from reports_sessions import HF_TRAINER, TRAIN, library_session

    from torchdoctor.analyze.advice.library_syncs import library_syncs

    session = library_session()
    session["syncs"].append({
        "kind": "bool", "op": "padding_mask.all()", "line": 354,
        "file": HF_TRAINER.replace("trainer.py", "masking_utils.py"),
        "function": "_ignore_bidirectional_mask_sdpa", "per_step": 1.0, "phase": "forward",
        "library": "transformers", "user_file": TRAIN, "user_line": 120,
        "user_op": "trainer.train()"})  # fmt: skip
    (unpadded,) = library_syncs(session)
    assert "no attention_mask" in unpadded.fix
    session["steps"] = padding_session()["steps"]
    (padded,) = library_syncs(session)
    assert "no attention_mask" not in padded.title + padded.fix
    assert "the batches are padded (measured)" in padded.fix
    assert "logging_nan_inf_filter=False" in padded.title  # (the switch that applies)


def test_a_causal_lm_under_the_trainer_is_told_the_language_modeling_collator():
    """peft's DoRA script copies input_ids into labels when it tokenizes with max_length
    padding: DataCollatorWithPadding raises on the unpadded labels; the language-modeling
    collator pads and builds them."""
    session = padding_session(pad_to=64, trainer=True)
    session["tree"] = {"kind": "root", "children": [
        {"kind": "module", "path": "model", "type": "PeftModelForCausalLM", "children": []}]}
    (item,) = padding_waste(session)
    assert "DataCollatorForLanguageModeling(tokenizer, mlm=False)" in item.fix
    assert "without copying `input_ids` into `labels`" in item.fix
    session["tree"]["children"][0]["type"] = "BertForSequenceClassification"
    (item,) = padding_waste(session)
    assert "DataCollatorWithPadding(tokenizer)" in item.fix and "mlm=False" not in item.fix

"""Advice in the terms of the framework that drives the loop (the Hugging Face Trainer)."""

from __future__ import annotations

from reports_sessions import slow_session

from torchdoctor.analyze.advice import advise


def _trainer_session():
    session = slow_session()
    session["phases"]["data"] = {"median": 30.0, "mean": 30.0}
    session["environment"] = {
        "device": "cpu", "cpus": 8,
        "optimizers": [{"type": "AdamW", "fused_supported": True, "fused": True,
                        "driver": "transformers"}],
        "data_loaders": [{"num_workers": 0, "persistent_workers": False, "pin_memory": False,
                          "iterators": 1, "steps": 9, "driver": "transformers"}],
    }  # fmt: skip
    return session


def test_the_trainer_s_data_loader_is_told_in_training_arguments():
    """A Trainer script has no DataLoader(...) to edit: the knobs are TrainingArguments'."""
    (data,) = [a for a in advise(_trainer_session()) if a.rule == "data-loading"]
    assert data.code.startswith("TrainingArguments(..., dataloader_num_workers=")
    assert "dataloader_persistent_workers=True" in data.code and "DataLoader(" not in data.code
    assert data.fix.startswith("The Trainer builds this DataLoader from TrainingArguments")


def test_compile_under_the_trainer_is_its_training_argument():
    compiled = [a for a in advise(_trainer_session()) if a.cause == "torch.compile"]
    assert compiled and all(a.code == "TrainingArguments(..., torch_compile=True)" for a in compiled)
    own = _trainer_session()
    for entry in (*own["environment"]["optimizers"], *own["environment"]["data_loaders"]):
        entry["driver"] = None
    (data,) = [a for a in advise(own) if a.rule == "data-loading"]
    assert data.code.startswith("loader = DataLoader(")
    assert all("torch.compile(model)" in a.code for a in advise(own) if a.cause == "torch.compile")


def test_attention_dropout_inside_sdpa_counts_toward_dropout_on_a_cpu():
    """accelerate's BERT fine-tune: Dropout modules 10% of the step, attention dropout inside
    SDPA (config.attention_probs_dropout_prob=0.1, no module) most of the rest: together the
    dropout advice ranks first (measured: 55 -> 30 ms with both off)."""
    from torchdoctor.analyze.advice import SPEEDUPS
    from torchdoctor.analyze.advice.dropout_share import dropout_share

    own = {"kind": "self", "path": "enc.attn.self.(self)", "total_ms": {"median": 40.0}}
    attn = {"kind": "module", "path": "enc.attn.self", "type": "BertSdpaSelfAttention",
            "total_ms": {"median": 45.0}, "children": [own]}  # fmt: skip
    drop = {"kind": "module", "path": "enc.drop", "type": "Dropout",
            "total_ms": {"median": 5.0}, "forward_ms": {"median": 4.0}, "children": []}  # fmt: skip
    session = {"step_ms": {"median": 100.0}, "phases": {"backward": {"median": 30.0}},
               "tree": {"kind": "root", "path": "", "total_ms": {"median": 100.0},
                        "children": [attn, drop]},
               "environment": {"device": "cpu", "attention_dropout": {
                   "model": "BertForSequenceClassification", "p": 0.1,
                   "attribute": "attention_probs_dropout_prob"}}}  # fmt: skip
    (item,) = dropout_share(session)
    speed = SPEEDUPS["attention_dropout_cpu"]
    assert item.estimated_saving_ms == 5.0 + 40.0 * (1 - 1 / speed.low)
    assert "attention_probs_dropout_prob=0.1" in item.evidence[0]
    assert item.code.startswith("config.attention_probs_dropout_prob = 0.0")
    session["environment"]["device"] = "cuda:0 H200"  # (the fused kernels take dropout there)
    assert dropout_share(session) == []


def test_multihead_attention_dropout_counts_toward_dropout_on_a_cpu():
    """A Lightning Fabric language model (nn.Transformer, dropout=0.1): 15 Dropout modules took
    28 ms, the attention weights' dropout inside nn.MultiheadAttention 38 ms more, which no
    module shows; the MHA layer is a leaf of the tree (its out_proj is never called)."""
    from torchdoctor.analyze.advice import SPEEDUPS
    from torchdoctor.analyze.advice.dropout_share import dropout_share

    mha = {"kind": "module", "path": "enc.layers.0.self_attn", "type": "MultiheadAttention",
           "total_ms": {"median": 75.0}, "children": []}  # fmt: skip
    drop = {"kind": "module", "path": "enc.layers.0.dropout1", "type": "Dropout",
            "total_ms": {"median": 28.0}, "forward_ms": {"median": 20.0}, "children": []}  # fmt: skip
    session = {"step_ms": {"median": 178.0}, "phases": {"backward": {"median": 90.0}},
               "tree": {"kind": "root", "path": "", "total_ms": {"median": 178.0},
                        "children": [mha, drop]},
               "environment": {"device": "cpu", "attention_dropout": {
                   "model": "TransformerLM", "p": 0.1, "attribute": "dropout", "layers": 2,
                   "attn_implementation": "nn.MultiheadAttention"}}}  # fmt: skip
    (item,) = dropout_share(session)
    speed = SPEEDUPS["attention_dropout_cpu"]
    assert item.estimated_saving_ms == 28.0 + 75.0 * (1 - 1 / speed.low)  # (measured: 64 ms)
    assert "nn.MultiheadAttention" in item.title and "dropout=0.1" in item.evidence[0]
    assert item.code.startswith("nn.MultiheadAttention(d_model, nhead, dropout=0.0)")


def test_a_skorch_nets_data_loader_is_told_in_its_iterator_train_arguments():
    """skorch's README classifier (clients round 21): the net builds its DataLoader, the script
    has none to edit; the knobs are the net's iterator_train__* arguments."""
    import sys

    from torchdoctor.collect.engine_state import loop_driver

    session = _trainer_session()
    for entry in (*session["environment"]["optimizers"], *session["environment"]["data_loaders"]):
        entry["driver"] = "skorch"
    (data,) = [a for a in advise(session) if a.rule == "data-loading"]
    assert data.code.startswith("net.set_params(iterator_train__num_workers=")
    assert "iterator_train__persistent_workers=True" in data.code and "DataLoader(" not in data.code
    assert data.fix.startswith("The skorch net builds this DataLoader from its iterator_train__")
    here = {"sys": sys, "loop_driver": loop_driver}
    for name, driver in (("skorch.net", "skorch"), ("skorch_extras.net", None)):
        assert eval("loop_driver(sys._getframe())", {**here, "__name__": name}) == driver

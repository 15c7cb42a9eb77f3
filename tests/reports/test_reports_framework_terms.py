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

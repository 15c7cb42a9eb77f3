"""TorchDoctorCallback for the Hugging Face Trainer: a tiny randomly initialized BERT on CPU."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from torchdoctor.collect.state import STATE  # noqa: E402
from torchdoctor.history import list_runs  # noqa: E402
from torchdoctor.integrations.huggingface import TorchDoctorCallback  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    def __init__(self, size: int = 48, fail_at: int | None = None) -> None:
        self.size, self.fail_at, self.calls = size, fail_at, 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:  # the sampler shuffles
            raise RuntimeError("boom in the dataset")
        generator = torch.Generator().manual_seed(index)
        return {"input_ids": torch.randint(0, 40, (8,), generator=generator),
                "labels": torch.tensor(index % 2)}  # fmt: skip


def _model():
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def _trainer(tmp_path, callback, dataset, **options):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=1000,
        dataloader_num_workers=0, **options,
    )  # fmt: skip
    return transformers.Trainer(
        model=_model(), args=args, train_dataset=dataset, callbacks=[callback]
    )


def _nodes(node):
    yield node
    for child in node.get("children") or ():
        yield from _nodes(child)


def _paths(node):
    return [n.get("path") for n in _nodes(node)]


def test_steps_are_optimizer_steps_with_accumulation(tmp_path, history_file):
    callback = TorchDoctorCallback(warmup=1)
    trainer = _trainer(tmp_path, callback, Tokens(), max_steps=4, gradient_accumulation_steps=3)
    trainer.train()
    session = callback.session
    assert trainer.state.global_step == 4
    assert len(session["steps"]) == 3  # optimizer steps after the warm-up step
    paths = set(_paths(session["tree"]))
    assert {"bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.output.dense",
            "classifier"} <= paths  # fmt: skip
    classifier = next(n for n in _nodes(session["tree"]) if n.get("path") == "classifier")
    assert classifier["calls_per_step"] == 3  # one per micro-batch
    for phase in ("forward", "backward", "optimizer"):
        assert session["phases"][phase]["median"] > 0, phase
    assert "gradient_accumulation_steps=3" in session["config"]["notes"][0]
    assert {o["driver"] for o in session["environment"]["optimizers"]} == {"transformers"}
    out = tmp_path / "run" / "torchdoctor"  # default: under output_dir
    assert (out / "session.json").exists() and (out / "report.html").exists()
    logged = trainer.state.log_history[-1]
    assert logged["step"] == 4 and logged["torchdoctor/steps"] == 3
    assert logged["torchdoctor/step_ms"] > 0
    assert [(r["kind"], r["steps"]) for r in list_runs(history_file)] == [("huggingface", 3)]
    assert STATE.profiler is None


def test_an_exception_in_train_still_writes_the_session(tmp_path):
    callback = TorchDoctorCallback(out=tmp_path / "prof", warmup=0, history=False)
    trainer = _trainer(tmp_path, callback, Tokens(fail_at=20), max_steps=5,
                       gradient_accumulation_steps=2)  # fmt: skip
    with pytest.raises(RuntimeError, match="boom in the dataset"):
        trainer.train()
    assert STATE.profiler is None  # hooks removed although the Trainer has no exception event
    session = callback.session
    assert session["interrupted"] is True and "boom in the dataset" in session["error"]
    assert len(session["steps"]) == 2  # 20 samples = 5 batches: two whole optimizer steps
    assert (tmp_path / "prof" / "session.json").exists()


def test_a_callback_added_after_init_still_cleans_up_on_errors(tmp_path):
    callback = TorchDoctorCallback(out=tmp_path / "prof", warmup=0, history=False)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, max_steps=4,
    )  # fmt: skip
    trainer = transformers.Trainer(model=_model(), args=args, train_dataset=Tokens())
    trainer.add_callback(callback)
    original = trainer.compute_loss
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in the loss")
        return original(*a, **k)

    trainer.compute_loss = failing
    with pytest.raises(RuntimeError, match="boom in the loss"):
        trainer.train()
    assert STATE.profiler is None
    assert "boom in the loss" in callback.session["error"]
    assert len(callback.session["steps"]) == 2

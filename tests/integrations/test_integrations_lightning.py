"""TorchDoctorCallback for Lightning: real fits on CPU with gradient accumulation."""

from __future__ import annotations

import csv

import pytest
import torch

L = pytest.importorskip("lightning")

from torchdoctor.collect.state import STATE  # noqa: E402
from torchdoctor.history import list_runs  # noqa: E402
from torchdoctor.integrations.lightning import TorchDoctorCallback  # noqa: E402


class TinyModule(L.LightningModule):
    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 1)
        self.fail_at = fail_at

    def training_step(self, batch, batch_idx):
        if self.fail_at is not None and batch_idx == self.fail_at:
            raise RuntimeError("boom in training_step")
        x, y = batch
        return torch.nn.functional.mse_loss(self.head(self.encoder(x)), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.head(self.encoder(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader():
    data = torch.utils.data.TensorDataset(torch.randn(96, 8), torch.randn(96, 1))
    return torch.utils.data.DataLoader(data, batch_size=4)


def _trainer(tmp_path, callback, **options):
    return L.Trainer(
        callbacks=[callback], accelerator="cpu", devices=1, enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
        logger=L.pytorch.loggers.CSVLogger(str(tmp_path / "logs")), **options,
    )  # fmt: skip


def _paths(node):
    yield node.get("path")
    for child in node.get("children") or ():
        yield from _paths(child)


def test_steps_are_optimizer_steps_with_accumulation(tmp_path, history_file, capsys):
    callback = TorchDoctorCallback(out=tmp_path / "prof", warmup=1)
    trainer = _trainer(tmp_path, callback, max_steps=6, accumulate_grad_batches=3)
    trainer.fit(TinyModule(), _loader())
    session = callback.session
    said = capsys.readouterr().err  # (the callback says where its report went)
    assert f"torchdoctor: the lightning callback's report is in {tmp_path / 'prof'}" in said
    assert trainer.global_step == 6
    assert len(session["steps"]) == trainer.global_step - 1  # optimizer steps after warm-up
    paths = set(_paths(session["tree"]))
    assert {"encoder", "encoder.0", "encoder.1", "head"} <= paths
    head = next(c for c in session["tree"]["children"] if c["path"] == "head")
    assert head["calls_per_step"] == 3  # three micro-batches per optimizer step
    for phase in ("data", "forward", "backward", "optimizer"):
        assert session["phases"][phase]["median"] > 0, phase
    assert "accumulate_grad_batches=3" in session["config"]["notes"][0]
    assert {o["driver"] for o in session["environment"]["optimizers"]} == {"lightning"}
    assert STATE.profiler is None
    assert {p.name for p in (tmp_path / "prof").iterdir()} >= {"session.json", "report.html"}
    runs = list_runs(history_file)
    assert [(r["kind"], r["steps"]) for r in runs] == [("lightning", 5)]
    assert runs[0]["id"] == callback.outputs["history_id"]


def test_summary_metrics_go_through_the_trainers_logger(tmp_path):
    callback = TorchDoctorCallback(out=tmp_path / "prof", history=False)
    trainer = _trainer(tmp_path, callback, max_steps=4, accumulate_grad_batches=2)
    trainer.fit(TinyModule(), _loader())
    (metrics_file,) = (tmp_path / "logs").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics_file.open()))
    logged = [r for r in rows if r.get("torchdoctor/step_ms")]
    assert logged and float(logged[-1]["torchdoctor/step_ms"]) > 0
    assert float(logged[-1]["torchdoctor/steps"]) == 3
    assert float(logged[-1]["torchdoctor/phase_pct/backward"]) > 0


def test_an_exception_in_fit_still_writes_the_session(tmp_path, history_file):
    callback = TorchDoctorCallback(out=tmp_path / "prof", warmup=0)
    trainer = _trainer(tmp_path, callback, max_steps=10, accumulate_grad_batches=2)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(TinyModule(fail_at=7), _loader())
    assert STATE.profiler is None  # hooks removed
    session = callback.session
    assert session["interrupted"] is True and "boom in training_step" in session["error"]
    assert len(session["steps"]) == 3  # batches 0-5: three optimizer steps before the failure
    assert (tmp_path / "prof" / "session.json").exists()
    assert [r["kind"] for r in list_runs(history_file)] == ["lightning"]


def test_validation_during_fit_is_noted(tmp_path):
    callback = TorchDoctorCallback(out=tmp_path / "prof", history=False)
    trainer = _trainer(tmp_path, callback, max_steps=6, accumulate_grad_batches=2,
                       val_check_interval=4, limit_val_batches=2)  # fmt: skip
    trainer.fit(TinyModule(), _loader(), _loader())
    assert len(callback.session["steps"]) == 5
    assert any("validation run(s) during fit" in n for n in callback.session["config"]["notes"])

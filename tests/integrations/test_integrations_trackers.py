"""MLflow (a local file store) and W&B (offline mode): metrics and artifacts, from the API and `run`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchdoctor
from torchdoctor.cli import main
from torchdoctor.integrations.trackers import log_mlflow, log_to_trackers, log_wandb

SCRIPT = """
import torch
net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for _ in range(5):
    opt.zero_grad()
    loss = net(torch.randn(4, 8)).sum()
    loss.backward()
    print(float(loss))
    opt.step()
"""


def _session():
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x = torch.randn(4, 8)
    return torchdoctor.profile(lambda: net(x).sum().backward(), model=net, steps=3, warmup=1,
                               syncs=False, label="tiny", history=False)  # fmt: skip


def _files(tmp_path):
    session = _session()
    path = session.save(tmp_path / "session.json")
    (tmp_path / "report.html").write_text("<html></html>")
    return session, [path, tmp_path / "report.html"]


def _run(args, cwd, monkeypatch, capsys):
    """`torchdoctor run ...` in this process (as the run-command tests do): (code, stderr)."""
    monkeypatch.chdir(cwd)
    code = main(["run", *args])
    return code, capsys.readouterr().err


def test_mlflow_run_gets_metrics_and_artifacts(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    session, files = _files(tmp_path)
    run_id = log_mlflow(session, files, experiment="td-tests")
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(run_id)
    metrics = run.data.metrics
    assert metrics["torchdoctor/step_ms"] == pytest.approx(session["step_ms"]["median"])
    assert metrics["torchdoctor/steps"] == 3
    assert "torchdoctor/phase_pct/backward" in metrics
    assert any(k.startswith("torchdoctor/module_pct/") for k in metrics)
    artifacts = {a.path for a in client.list_artifacts(run_id, "torchdoctor")}
    assert artifacts == {"torchdoctor/session.json", "torchdoctor/report.html"}
    assert run.info.status == "FINISHED" and mlflow.active_run() is None


def test_mlflow_logs_into_the_scripts_active_run(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    session, files = _files(tmp_path)
    with mlflow.start_run() as active:
        assert log_mlflow(session, files) == active.info.run_id
        assert mlflow.active_run() is not None  # still the user's run, not closed by us
    assert "torchdoctor/step_ms" in mlflow.tracking.MlflowClient().get_run(
        active.info.run_id).data.metrics  # fmt: skip


def _offline_runs(tmp_path):
    return sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_wandb_offline_run_gets_metrics_and_artifacts(tmp_path):
    wandb = pytest.importorskip("wandb")
    session, files = _files(tmp_path)
    run = wandb.init(project="td-tests")
    log_wandb(session, files)
    assert run.summary["torchdoctor/step_ms"] == pytest.approx(session["step_ms"]["median"])
    assert wandb.run is run  # the user's run stays open
    run.finish()
    wandb.teardown()  # the service writes the run file out
    (record,) = _offline_runs(tmp_path)
    data = record.read_bytes()
    assert b"torchdoctor/step_ms" in data and b"torchdoctor/phase_pct/forward" in data
    assert b"torchdoctor/session.json" in data and b"torchdoctor/report.html" in data


def test_unknown_tracker_is_a_clear_error():
    with pytest.raises(ValueError, match="expected one of mlflow, wandb"):
        log_to_trackers({}, [], ["neptune"])


def test_run_with_mlflow_and_wandb_flags(tmp_path, monkeypatch, capsys):
    mlflow = pytest.importorskip("mlflow")
    wandb = pytest.importorskip("wandb")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    code, err = _run(["--mlflow", "--wandb", "--out", "prof", str(script)], tmp_path,
                     monkeypatch, capsys)  # fmt: skip
    assert code == 0, err
    assert "logged to mlflow" in err and "logged to wandb" in err
    wandb.teardown()  # the service writes the run file out
    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.metrics["torchdoctor/steps"] == 4  # 5 optimizer steps - the warm-up step
    assert {a.path for a in client.list_artifacts(run.info.run_id, "torchdoctor")} == {
        "torchdoctor/session.json", "torchdoctor/report.html"}  # fmt: skip
    (record,) = _offline_runs(tmp_path)
    assert b"torchdoctor/syncs_per_step" in record.read_bytes()


def test_a_failing_tracker_does_not_fail_the_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknown-scheme://nowhere")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    code, err = _run(["--mlflow", "--out", "prof", str(script)], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert "not logged to mlflow" in err
    assert Path(tmp_path / "prof" / "session.json").exists()

"""Integration tests run offline: trackers write to temporary local stores, nothing phones home."""

from __future__ import annotations

import os
import sys

import pytest

OFFLINE = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_CONSOLE": "off",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MLFLOW_ALLOW_FILE_STORE": "true",  # a local file store: mlflow-skinny has no SQL backend
    "DISABLE_MLFLOW_INTEGRATION": "TRUE",
}


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Every tracker and hub client offline, its files under this test's tmp_path."""
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    (tmp_path / "wandb").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    yield
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None:  # MLflow keeps the chosen experiment in a global: forget it
        while fluent.active_run() is not None:
            fluent.end_run()
        fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment() exports it


@pytest.fixture
def history_file():
    """The run history this test writes (set by the root conftest for every test)."""
    import os
    from pathlib import Path

    return Path(os.environ["TORCHDOCTOR_HISTORY"])

"""Send a session to an experiment tracker: MLflow or Weights & Biases.

Both log the same thing: the :func:`~torchdoctor.analyze.summary.summary_metrics` of the
session (median step time and quartiles, each phase's share, host syncs per step, the top
modules' shares of the step, the advice count) as metrics, and the session's files
(``session.json``, ``report.html``) as artifacts under ``torchdoctor/``. When the tracker already
has an active run (the training script's own), they log into it; otherwise they open a run,
log, and close it. The tracker packages are optional extras (``pip install
torchdoctor[mlflow]`` / ``torchdoctor[wandb]``); where to log comes from the trackers' own
settings (``MLFLOW_TRACKING_URI``, ``WANDB_PROJECT``, ``WANDB_MODE=offline`` ...).

Example:
    >>> safe_metric_name("torchdoctor/module_pct/my region!")
    'torchdoctor/module_pct/my region_'
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from torchdoctor.analyze.summary import summary_metrics

TRACKERS = ("mlflow", "wandb")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ :]")


def safe_metric_name(name: str) -> str:
    """A metric name both trackers accept (other characters become ``_``).

    Example:
        >>> safe_metric_name("a[0-3]")
        'a_0-3_'
    """
    return _UNSAFE.sub("_", name)


def _require(package: str, extra: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"logging to {extra} needs the {package!r} package, which is not installed; "
            f"install it with `pip install torchdoctor[{extra}]`"
        ) from exc


def tracker_metrics(session: Mapping[str, Any]) -> dict[str, float]:
    """The session's summary metrics under names every tracker accepts.

    Example:
        >>> tracker_metrics({"step_ms": {"median": 2.0}})["torchdoctor/step_ms"]
        2.0
    """
    return {safe_metric_name(k): float(v) for k, v in summary_metrics(session).items()}


def _existing(files: Iterable[str | os.PathLike[str]]) -> list[str]:
    return [str(f) for f in files if f and os.path.isfile(f)]


def log_mlflow(
    session: Mapping[str, Any],
    files: Iterable[str | os.PathLike[str]] = (),
    *,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    step: int | None = None,
) -> str:
    """Log the session's metrics and files to MLflow; returns the run id.

    Logs into the active run if there is one, else opens (and closes) a run named
    ``run_name`` (default: the session's label) in ``experiment``.

    Example (a local file store; MLflow wants it allowed explicitly):
        >>> import mlflow, tempfile
        >>> from pathlib import Path
        >>> from unittest import mock
        >>> store = (Path(tempfile.mkdtemp()) / "mlruns").as_uri()
        >>> with mock.patch.dict(os.environ, MLFLOW_ALLOW_FILE_STORE="true",
        ...                      MLFLOW_TRACKING_URI=store):
        ...     run_id = log_mlflow({"label": "demo", "step_ms": {"median": 2.0}})
        ...     mlflow.get_run(run_id).data.metrics["torchdoctor/step_ms"]
        2.0
    """
    mlflow = _require("mlflow", "mlflow")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    active = mlflow.active_run()
    if active is None and experiment:
        mlflow.set_experiment(experiment)
    run = active or mlflow.start_run(run_name=run_name or session.get("label") or "torchdoctor")
    try:
        mlflow.log_metrics(tracker_metrics(session), step=step)
        top = summary_metrics(session, modules=1)
        tops = [k.rsplit("/", 1)[-1] for k in top if k.startswith("torchdoctor/module_pct/")]
        if tops:
            mlflow.set_tag("torchdoctor.top_module", tops[0])
        for path in _existing(files):
            mlflow.log_artifact(path, artifact_path="torchdoctor")
    finally:
        if active is None:
            mlflow.end_run()
    return run.info.run_id


def log_wandb(
    session: Mapping[str, Any],
    files: Iterable[str | os.PathLike[str]] = (),
    *,
    project: str | None = None,
    run_name: str | None = None,
    step: int | None = None,
) -> str:
    """Log the session's metrics (history and summary) and files (an artifact) to W&B.

    Logs into ``wandb.run`` if there is one, else opens a run in ``project`` (default
    ``WANDB_PROJECT`` or ``torchdoctor``) and finishes it. Returns the run id.

    Example (W&B's ``disabled`` mode: a run that writes nothing):
        >>> import wandb
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, WANDB_MODE="disabled", WANDB_SILENT="true"):
        ...     run_id = log_wandb({"label": "demo", "step_ms": {"median": 2.0}})
        >>> isinstance(run_id, str), wandb.run is None  # the run it opened is finished
        (True, True)
        >>> wandb.teardown()  # forget the disabled mode: later runs set up afresh
    """
    wandb = _require("wandb", "wandb")
    active = wandb.run
    run = active or wandb.init(
        project=project or os.environ.get("WANDB_PROJECT") or "torchdoctor",
        name=run_name or session.get("label") or None,
        job_type="torchdoctor",
    )
    try:
        metrics = tracker_metrics(session)
        if step is None:
            run.log(metrics)
        else:
            run.log(metrics, step=step)
        run.summary.update(metrics)
        paths = _existing(files)
        if paths:
            artifact = wandb.Artifact(
                safe_metric_name(f"torchdoctor-{run.id}").replace("/", "-"), type="torchdoctor"
            )
            for path in paths:
                artifact.add_file(path, name=f"torchdoctor/{os.path.basename(path)}")
            run.log_artifact(artifact)
    finally:
        if active is None:
            run.finish()
    return str(run.id)


def log_to_trackers(
    session: Mapping[str, Any],
    files: Iterable[str | os.PathLike[str]],
    trackers: Iterable[str],
    **options: Any,
) -> dict[str, str]:
    """Log to each named tracker (``"mlflow"``, ``"wandb"``): ``{tracker: run id}``.

    Example:
        >>> log_to_trackers({}, [], [])
        {}
    """
    files = list(files)
    done = {}
    for name in trackers:
        if name == "mlflow":
            done[name] = log_mlflow(session, files, **options)
        elif name == "wandb":
            done[name] = log_wandb(session, files, **options)
        else:
            raise ValueError(f"unknown tracker {name!r}; expected one of {', '.join(TRACKERS)}")
    return done

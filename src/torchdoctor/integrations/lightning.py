"""``TorchDoctorCallback`` for Lightning: profile ``trainer.fit`` without changing the model.

One step is one optimizer step (with ``accumulate_grad_batches=k``, the k micro-batches before
it): the step ends in ``on_train_batch_end`` of the batch whose optimizer stepped
(``trainer.global_step`` moved). Phases come from the hooks the framework runs: fetching the
batch (``data``), the LightningModule's layers (``forward``), ``backward()`` and
``optimizer.step()``; the tree holds the LightningModule's submodules by attribute path.
At the end of fit, and when fit raises, the session and reports are written to ``out``, the
run is appended to the history, the summary metrics go to the Trainer's loggers, and to
MLflow / W&B when asked (``trackers=("mlflow",)``).

Example (needs ``pip install torchdoctor[lightning]``)::

    from torchdoctor.integrations.lightning import TorchDoctorCallback
    trainer = lightning.Trainer(callbacks=[TorchDoctorCallback(out="prof")],
                                accumulate_grad_batches=4, max_steps=50)
    trainer.fit(model, loader)
    print(trainer.callbacks[0].session.tree())
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - the old package name
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as exc:
        raise ImportError(
            "torchdoctor.integrations.lightning needs Lightning; install it with "
            "`pip install torchdoctor[lightning]`"
        ) from exc

from torchdoctor.collect.profiler import Profiler
from torchdoctor.integrations.callback_options import CallbackOptions


class TorchDoctorCallback(Callback, CallbackOptions):
    """Profile a Lightning fit: steps are optimizer steps; session and reports in ``out``.

    ``warmup``, ``max_steps``, ``syncs``, ``memory`` and ``backward`` are the
    :class:`~torchdoctor.Profiler`'s options; ``history`` (True, a path, or False) and
    ``trackers`` (``"mlflow"``, ``"wandb"``) as for ``torchdoctor run``. After fit,
    ``.session`` holds the Session and ``.outputs`` what was written.

    Example:
        >>> TorchDoctorCallback(out="prof", warmup=2).warmup
        2
    """

    def __init__(
        self,
        out: str | os.PathLike[str] = "torchdoctor-out",
        *,
        warmup: int = 1,
        max_steps: int | None = None,
        syncs: bool = True,
        memory: bool = True,
        backward: bool = True,
        label: str | None = None,
        history: bool | str | os.PathLike[str] = True,
        trackers: Iterable[str] = (),
        log_metrics: bool = True,
    ) -> None:
        super().__init__()
        CallbackOptions.__init__(
            self, warmup=warmup, max_steps=max_steps, syncs=syncs, memory=memory,
            backward=backward, label=label, history=history, trackers=trackers,
        )  # fmt: skip
        self.out = out
        self.log_metrics = log_metrics
        self.session: Any = None
        self.outputs: dict[str, Any] | None = None
        self._profiler: Profiler | None = None
        self._global_step = 0
        self._validations = 0

    # -- Lightning hooks ------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self._profiler is not None:  # a second fit with the same callback: a fresh run
            self._finish(trainer, None)
        self.session = self.outputs = None
        self._profiler = self.new_profiler(pl_module, type(pl_module).__name__)
        self._global_step = trainer.global_step
        self._validations = 0
        self._profiler.start()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._profiler is not None and trainer.global_step != self._global_step:
            self._global_step = trainer.global_step
            self._profiler.step()  # an optimizer step happened in this batch: a step ends

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self._profiler is not None:
            self._validations += 1

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer, None)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._finish(trainer, exception)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._profiler is not None:  # fit stopped without on_train_end: hooks come off
            self._finish(trainer, None)

    # -- the end --------------------------------------------------------------------------
    def _finish(self, trainer: Any, exception: BaseException | None) -> None:
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return
        if exception is None:
            session = profiler.stop()
        else:
            profiler.__exit__(type(exception), exception, exception.__traceback__)
            session = profiler.session
        session["config"]["notes"] = [
            "Lightning: one step = one optimizer step (trainer.global_step), "
            f"accumulate_grad_batches={getattr(trainer, 'accumulate_grad_batches', 1)}",
            *session["config"].get("notes", []),
        ]
        if self._validations:
            session["config"]["notes"].insert(1, _validation_note(self._validations))
        self.session = session
        from torchdoctor.integrations.outputs import publish

        self.outputs = publish(
            session, self.out, kind="lightning", script=_script(), args=sys.argv[1:],
            history=self.history, trackers=self.trackers,
            tracker_options={"step": int(getattr(trainer, "global_step", 0) or 0)},
        )  # fmt: skip
        if self.log_metrics:
            _log_to_loggers(trainer, session)


def _validation_note(count: int) -> str:
    """What validation during fit does to the steps (it runs inside the step it interrupts).

    Example:
        >>> _validation_note(2).split(":")[0]
        '2 validation run(s) during fit are inside the steps they interrupted'
    """
    return (
        f"{count} validation run(s) during fit are inside the steps they interrupted: those "
        "steps are outliers (the median step is not affected)"
    )


def _script() -> str | None:
    script = sys.argv[0] if sys.argv else None
    return script if script and os.path.isfile(script) else None


def _log_to_loggers(trainer: Any, session: Any) -> None:
    """The summary metrics through each of the Trainer's loggers (TensorBoard, CSV, ...)."""
    from torchdoctor.integrations.trackers import tracker_metrics

    metrics = tracker_metrics(session)
    for logger in getattr(trainer, "loggers", None) or ():
        try:
            logger.log_metrics(metrics, step=int(trainer.global_step))
            logger.save()
        except Exception as exc:  # noqa: BLE001 - a logger's failure must not end the fit
            print(f"torchdoctor: metrics not logged to {type(logger).__name__}: {exc}",
                  file=sys.stderr)  # fmt: skip

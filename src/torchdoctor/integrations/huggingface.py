"""``TorchDoctorCallback`` for the Hugging Face ``transformers.Trainer``.

One step is one optimizer step: the Trainer's ``on_step_end`` (after the
``gradient_accumulation_steps`` micro-batches and the optimizer step) ends it. Phases come from
what the Trainer runs: fetching batches (``data``), the model's layers (``forward``),
``backward()`` and ``optimizer.step()``; the tree holds the model's submodules by attribute
path. At the end of training, and when ``trainer.train()`` raises, the session and reports are
written to ``out`` (default ``OUTPUT_DIR/torchdoctor``), the run is appended to the history,
and the summary metrics are added to the Trainer's logs (``trainer.state.log_history``) and to
MLflow / W&B when asked (``trackers=("mlflow",)``).

Example (needs ``pip install torchdoctor[hf]``)::

    from torchdoctor.integrations.huggingface import TorchDoctorCallback
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=[TorchDoctorCallback()])
    trainer.train()
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "torchdoctor.integrations.huggingface needs transformers; install it with "
        "`pip install torchdoctor[hf]`"
    ) from exc

from torchdoctor.collect.profiler import Profiler
from torchdoctor.integrations.callback_options import CallbackOptions


class TorchDoctorCallback(TrainerCallback, CallbackOptions):
    """Profile ``Trainer.train``: steps are optimizer steps; session and reports in ``out``.

    ``warmup``, ``max_steps``, ``syncs``, ``memory`` and ``backward`` are the
    :class:`~torchdoctor.Profiler`'s options; ``history`` (True, a path, or False) and
    ``trackers`` (``"mlflow"``, ``"wandb"``) as for ``torchdoctor run``. After training,
    ``.session`` holds the Session and ``.outputs`` what was written.

    Example:
        >>> TorchDoctorCallback(out="prof").out
        'prof'
    """

    def __init__(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        warmup: int = 1,
        max_steps: int | None = None,
        syncs: bool = True,
        memory: bool = True,
        backward: bool = True,
        label: str | None = None,
        history: bool | str | os.PathLike[str] = True,
        trackers: Iterable[str] = (),
    ) -> None:
        CallbackOptions.__init__(
            self, warmup=warmup, max_steps=max_steps, syncs=syncs, memory=memory,
            backward=backward, label=label, history=history, trackers=trackers,
        )  # fmt: skip
        self.out = out
        self.session: Any = None
        self.outputs: dict[str, Any] | None = None
        self._profiler: Profiler | None = None
        self._context: tuple[Any, Any] | None = None  # (args, state) of the running train()
        self._guarded: set[int] = set()
        self._evaluations = 0

    # -- Trainer events -------------------------------------------------------------------
    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._guard(_calling_trainer())

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._profiler is not None:
            self._finish(None)
        model = kwargs.get("model")
        self.session = self.outputs = None
        self._profiler = self.new_profiler(
            model, type(model).__name__ if model is not None else "Trainer"
        )
        self._context = (args, state)
        self._evaluations = 0
        self._profiler.start()
        trainer = _calling_trainer()
        if trainer is not None and id(trainer) not in self._guarded:
            # added after Trainer.__init__ (add_callback): train() is already running, so guard
            # the micro-steps instead; an error elsewhere is caught at the next train() start
            self._guard(trainer, method="training_step")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._profiler is not None:
            self._profiler.step()  # after the optimizer step of the accumulated micro-batches

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._profiler is not None:
            self._evaluations += 1

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._finish(None)

    # -- exceptions: train() itself is wrapped (the Trainer has no exception event) --------
    def _guard(self, trainer: Any, method: str = "train") -> None:
        """Wrap ``trainer.train`` (or another method) so that an exception still writes the
        report and removes the hooks."""
        if trainer is None or id(trainer) in self._guarded:
            return
        self._guarded.add(id(trainer))
        original = getattr(trainer, method)

        @functools.wraps(original)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except BaseException as exc:
                self._finish(exc)
                raise

        setattr(trainer, method, guarded)

    def _finish(self, exception: BaseException | None) -> None:
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return
        if exception is None:
            session = profiler.stop()
        else:
            profiler.__exit__(type(exception), exception, exception.__traceback__)
            session = profiler.session
        args, state = self._context or (None, None)
        accumulation = getattr(args, "gradient_accumulation_steps", 1)
        session["config"]["notes"] = [
            "Hugging Face Trainer: one step = one optimizer step "
            f"(gradient_accumulation_steps={accumulation})",
            *session["config"].get("notes", []),
        ]
        if self._evaluations:
            session["config"]["notes"].insert(
                1,
                f"{self._evaluations} evaluation(s) during training are inside the steps "
                "they followed: those steps are outliers (the median step is not affected)",
            )
        self.session = session
        out = self.out or os.path.join(getattr(args, "output_dir", None) or ".", "torchdoctor")
        from torchdoctor.integrations.outputs import publish

        step = int(getattr(state, "global_step", 0) or 0)
        self.outputs = publish(
            session, out, kind="huggingface", script=_script(), args=sys.argv[1:],
            history=self.history, trackers=self.trackers, tracker_options={"step": step},
        )  # fmt: skip
        if state is not None:
            from torchdoctor.integrations.trackers import tracker_metrics

            state.log_history.append({**tracker_metrics(session), "step": step})


def _calling_trainer(depth: int = 12) -> Any:
    """The ``transformers.Trainer`` whose method is on the call stack (it calls the event)."""
    from transformers import Trainer

    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer):
            return candidate
        frame = frame.f_back
    return None


def _script() -> str | None:
    script = sys.argv[0] if sys.argv else None
    return script if script and os.path.isfile(script) else None

"""What the framework callbacks (Lightning, Hugging Face) share: their profiling options and
the Profiler they start for a training run.

Example:
    >>> import torch
    >>> options = CallbackOptions(warmup=2, trackers=["mlflow"])
    >>> options.trackers, options.new_profiler(torch.nn.Linear(2, 2), "fit").warmup
    (('mlflow',), 2)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from torchdoctor.collect.profiler import Profiler


class CallbackOptions:
    """``warmup``, ``max_steps``, ``syncs``, ``memory`` and ``backward`` as for
    :class:`~torchdoctor.Profiler`; ``label`` names the run (default: the model's class);
    ``history`` (True, a path, or False) and ``trackers`` (``"mlflow"``, ``"wandb"``) as for
    ``torchdoctor run``. The callbacks inherit it, so the options are their attributes.

    Example:
        >>> CallbackOptions(max_steps=5, history=False).history
        False
    """

    def __init__(
        self,
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
        self.warmup = warmup
        self.max_steps = max_steps
        self.syncs = syncs
        self.memory = memory
        self.backward = backward
        self.label = label
        self.history = history
        self.trackers = tuple(trackers)

    def new_profiler(self, model: Any, default_label: str) -> Profiler:
        """A Profiler for one run, stepped by the callback at each optimizer step.

        Example:
            >>> CallbackOptions(label="mine").new_profiler(None, "Trainer").label
            'mine'
        """
        return Profiler(
            model, syncs=self.syncs, warmup=self.warmup, max_steps=self.max_steps,
            step_boundary="manual", label=self.label or default_label, memory=self.memory,
            backward=self.backward,
        )  # fmt: skip

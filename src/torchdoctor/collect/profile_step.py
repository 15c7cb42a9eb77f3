"""``torchdoctor.profile(step_fn, ...)``: run a step function under the profiler.

Example:
    >>> import torch, torchdoctor
    >>> net = torch.nn.Linear(4, 2)
    >>> s = torchdoctor.profile(lambda: net(torch.ones(1, 4)).sum().backward(), model=net,
    ...                         steps=2, warmup=0, syncs=False)
    >>> len(s["steps"])
    2
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from torchdoctor.collect.profiler import Profiler
from torchdoctor.session import Session


def profile(
    step_fn: Callable[[], Any],
    *,
    model: torch.nn.Module | None = None,
    steps: int = 10,
    warmup: int = 3,
    inference_fn: Callable[[], Any] | None = None,
    syncs: bool = True,
    label: str | None = None,
    compare_inference: bool = False,
    batch: Any = None,
    memory: bool = True,
    backward: bool = True,
    history: bool | str | os.PathLike[str] = True,
    hot_lines: bool = True,
    detail: str = "always",
) -> Session:
    """Run ``step_fn`` ``warmup + steps`` times under the profiler and return the Session.

    With ``inference_fn`` (or ``compare_inference=True`` with ``model`` and ``batch``: the model
    is run in eval mode under ``torch.inference_mode``), the train/inference time ratio and the
    backward/forward ratio are added as ``session["inference"]``. The run's summary is appended
    to the run history (``torchdoctor history``; ``history=PATH`` picks the file, ``False`` or
    ``TORCHDOCTOR_HISTORY=off`` skips it). ``detail``: as for
    :class:`~torchdoctor.collect.profiler.Profiler`; ``"always"`` by default (the number of
    steps is bounded by ``steps``: every one is recorded in full).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(4, 2)
        >>> x = torch.randn(3, 4)
        >>> s = profile(lambda: net(x).sum().backward(), model=net, steps=2, warmup=0,
        ...             inference_fn=lambda: net(x), syncs=False)
        >>> s["config"]["steps"], s["inference"]["train_inference_ratio"] > 0
        (2, True)
    """
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    if compare_inference and inference_fn is None:
        if model is None or batch is None:
            raise ValueError(
                "compare_inference=True needs model= and batch= (the model is called on the "
                "batch in eval mode), or pass inference_fn= instead"
            )
        from torchdoctor.collect.inference import model_inference_fn

        inference_fn = model_inference_fn(model, batch)
    name = label or getattr(step_fn, "__name__", None) or "step_fn"
    prof = Profiler(model, syncs=syncs, warmup=warmup, label=name, memory=memory,
                    backward=backward, step_boundary="step_fn", detail=detail,
                    hot_lines=hot_lines)  # fmt: skip
    with prof:
        for _ in range(warmup + steps):
            step_fn()
            prof.step()
    session = prof.session
    assert session is not None
    if inference_fn is not None:
        from torchdoctor.collect.inference import compare_train_inference

        session["inference"] = compare_train_inference(
            step_fn, inference_fn, session, repeats=min(steps, 5), device=prof.device
        )
    if history is not False:
        from torchdoctor.session import view

        # the run history lives above the pipeline: reached through the views seam
        view("record_run")(session, script=_script_of(step_fn), args=sys.argv[1:], kind="profile",
                   path=None if history is True else history)  # fmt: skip
    return session


def _script_of(step_fn: Callable[[], Any]) -> str | None:
    """The file defining the step function (None for a notebook cell or a builtin)."""
    code = getattr(step_fn, "__code__", None) or getattr(type(step_fn).__call__, "__code__", None)
    filename = getattr(code, "co_filename", None)
    return filename if filename and os.path.isfile(filename) else None

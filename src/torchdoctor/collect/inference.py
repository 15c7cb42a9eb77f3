"""Training step vs inference: time ratio, measured interleaved with no profiler hooks.

Seed 000 reports training 220x slower than inference and backward 1.66x forward; these two
numbers are what :func:`compare_train_inference` adds to a session as ``session["inference"]``.

Example:
    >>> import torch
    >>> from torchdoctor.session import Session
    >>> net = torch.nn.Linear(4, 2)
    >>> s = Session.new("x", with_environment=False)
    >>> out = compare_train_inference(lambda: net(torch.ones(1, 4)).sum().backward(),
    ...                               model_inference_fn(net, torch.ones(1, 4)), s, repeats=2)
    >>> out["train_inference_ratio"] > 0
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from torchdoctor.session import stat


def model_inference_fn(model: torch.nn.Module, batch: Any) -> Callable[[], Any]:
    """A function running ``model(batch)`` in eval mode under ``torch.inference_mode``.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> model_inference_fn(net, torch.ones(1, 2))().shape
        torch.Size([1, 1])
    """

    def run() -> Any:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                if isinstance(batch, dict):
                    return model(**batch)
                if isinstance(batch, tuple):
                    return model(*batch)
                return model(batch)
        finally:
            model.train(was_training)

    return run


def _timed(fn: Callable[[], Any], cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter_ns()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter_ns() - start) / 1e6


def compare_train_inference(
    step_fn: Callable[[], Any],
    inference_fn: Callable[[], Any],
    session: Any,
    *,
    repeats: int = 5,
    device: str = "cpu",
) -> dict[str, float | None]:
    """Median times of ``step_fn`` and ``inference_fn`` run A B A B..., and their ratios.

    Example:
        >>> result = compare_train_inference(lambda: None, lambda: None, {"phases": {}}, repeats=2)
        >>> sorted(result)
        ['backward_forward_ratio', 'inference_ms', 'train_inference_ratio', 'train_step_ms']
    """
    cuda = str(device).startswith("cuda")
    step_fn()
    inference_fn()
    train, infer = [], []
    for _ in range(max(1, repeats)):
        train.append(_timed(step_fn, cuda))
        infer.append(_timed(inference_fn, cuda))
    train_ms, inference_ms = stat(train)["median"], stat(infer)["median"]
    phases = session.get("phases") or {}
    forward = (phases.get("forward") or {}).get("mean")
    backward = (phases.get("backward") or {}).get("mean")
    return {
        "train_step_ms": train_ms,
        "inference_ms": inference_ms,
        "train_inference_ratio": train_ms / inference_ms if inference_ms > 0 else None,
        "backward_forward_ratio": backward / forward if forward and backward is not None else None,
    }

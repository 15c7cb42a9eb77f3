"""Lazy training metrics: accumulate on the device, synchronize once when displayed.

The usual training loop calls ``loss.item()`` (or ``float(loss)``) for every logged value on
every step. On a GPU each call waits for all queued work to finish: the host stalls, the queue
drains, and the GPU idles while Python prepares the next step (seed 002). ``LazyMetrics`` keeps
running sums as device tensors, so :meth:`LazyMetrics.update` never synchronizes; one
:meth:`LazyMetrics.compute` (or :meth:`LazyMetrics.postfix`, every ``sync_every`` updates)
converts every value at once with a single device-to-host copy.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch

_REDUCTIONS = ("mean", "sum", "max", "min", "last")
_RESERVED = {"weight"}


def _nan_max(a: float, b: float) -> float:
    """``max`` that keeps a NaN, as ``torch.maximum`` does on the device path."""
    return a if a != a or a > b else b


def _nan_min(a: float, b: float) -> float:
    """``min`` that keeps a NaN, as ``torch.minimum`` does on the device path."""
    return a if a != a or a < b else b


class _State:
    """Running state of one metric: a device value plus a host or device weight."""

    __slots__ = ("reduction", "value", "weight", "host_value", "host_weight")

    def __init__(self, reduction: str) -> None:
        self.reduction = reduction
        self.value: torch.Tensor | None = None  # device accumulator
        self.weight: torch.Tensor | None = None  # device weight sum (mean with tensor weights)
        self.host_value: float | None = None  # accumulator for plain Python numbers
        self.host_weight = 0.0


class LazyMetrics:
    """Running training metrics kept on the device; no host sync until they are read.

    ``update(**values)`` adds one observation per name. Values are 0-d tensors (detached here) or
    Python numbers. Each name is reduced with ``reduce[name]`` (default ``"mean"``, weighted by
    ``weight``); ``"sum"`` for counters, ``"max"``/``"min"``, ``"last"``. ``compute()`` returns
    plain floats for all of them with one synchronization. Per-class running counts (support and
    correct predictions) are kept with a scatter-add, sync-free, via :meth:`update_classes`.

    For a progress bar, call :meth:`postfix` every step: it synchronizes only every
    ``sync_every`` updates and returns the cached strings otherwise (``tqdm.set_postfix(...)``,
    or ``rich`` ``progress.update(task, description=metrics.format())``).

    Example:
        >>> import torch
        >>> metrics = LazyMetrics(reduce={"seen": "sum"}, sync_every=2)
        >>> for step in range(4):
        ...     loss = torch.tensor(float(step))
        ...     metrics.update(loss=loss, seen=8)
        >>> metrics.compute()
        {'loss': 1.5, 'seen': 32.0}
    """

    def __init__(
        self,
        reduce: Mapping[str, str] | None = None,
        *,
        sync_every: int = 50,
        num_classes: int | None = None,
        dtype: torch.dtype = torch.float64,
        precision: int = 4,
    ) -> None:
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}; use 1 to sync every step")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes}")
        self._reduce = dict(reduce or {})
        for name, how in self._reduce.items():
            self._check_reduction(name, how)
        self.sync_every = sync_every
        self.num_classes = num_classes
        self.dtype = dtype
        self.precision = precision
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all accumulated values (start of an epoch); the cached display is kept."""
        self._states: dict[str, _State] = {}
        self._class_total: torch.Tensor | None = None
        self._class_correct: torch.Tensor | None = None
        self.updates = 0
        self._since_sync = 0
        if not hasattr(self, "latest"):
            #: The values of the last synchronization (plain floats); reading it never syncs.
            self.latest: dict[str, float] = {}
        self.syncs = getattr(self, "syncs", 0)

    @staticmethod
    def _check_reduction(name: str, how: str) -> None:
        if how not in _REDUCTIONS:
            raise ValueError(
                f"unknown reduction {how!r} for metric {name!r}; expected one of {_REDUCTIONS}"
            )

    def _state(self, name: str) -> _State:
        state = self._states.get(name)
        if state is None:
            how = self._reduce.get(name, "mean")
            state = self._states[name] = _State(how)
        return state

    # -- hot path ------------------------------------------------------------------------------
    def update(self, weight: float | torch.Tensor = 1.0, **values: float | torch.Tensor) -> None:
        """Add one observation per named value; never synchronizes with the device.

        ``weight`` (a number or a 0-d tensor, e.g. the batch size) weights ``"mean"`` metrics.

        Example:
            >>> import torch
            >>> metrics = LazyMetrics()
            >>> metrics.update(loss=torch.tensor(2.0), weight=3)
            >>> metrics.update(loss=torch.tensor(4.0), weight=1)
            >>> metrics.compute()["loss"]
            2.5
        """
        weight_is_tensor = isinstance(weight, torch.Tensor)
        if weight_is_tensor and weight.dim() != 0:
            if weight.numel() != 1:
                raise ValueError(
                    f"weight must be one number (a 0-d tensor), got shape {tuple(weight.shape)}; "
                    "pass the batch size, e.g. weight=x.shape[0]"
                )
            weight = weight.reshape(())
        with torch.no_grad():  # cheaper than a detach() per value; keeps the sums out of autograd
            for name, value in values.items():
                state = self._states.get(name) or self._state(name)
                if isinstance(value, torch.Tensor):
                    if value.dim() != 0:
                        if value.numel() != 1:
                            raise ValueError(
                                f"metric {name!r} got a tensor of shape {tuple(value.shape)}; "
                                "expected one value (a 0-d tensor): reduce it first, e.g. "
                                "loss.mean()"
                            )
                        value = value.reshape(())
                    self._update_tensor(state, value, weight, weight_is_tensor)
                elif isinstance(value, (int, float)) and weight_is_tensor:
                    as_tensor = torch.tensor(float(value), dtype=self.dtype, device=weight.device)
                    self._update_tensor(state, as_tensor, weight, weight_is_tensor)
                elif isinstance(value, (int, float)):
                    self._update_host(state, float(value), weight)
                else:
                    raise TypeError(
                        f"metric {name!r} got {type(value).__name__}; expected a 0-d tensor or "
                        "a Python number"
                    )
        self.updates += 1
        self._since_sync += 1

    def _update_tensor(
        self, state: _State, value: torch.Tensor, weight: Any, weight_is_tensor: bool
    ) -> None:
        how = state.reduction
        if state.value is None:  # the accumulator: a fresh tensor of the accumulation dtype
            state.value = torch.zeros((), dtype=self.dtype, device=value.device)
            if how in ("max", "min", "last"):
                state.value.copy_(value)
                return
        if how == "mean":
            if weight_is_tensor:
                weight = weight.to(device=value.device, dtype=self.dtype)
                if state.weight is None:  # move the host weight sum onto the device
                    state.weight = torch.full(
                        (), state.host_weight, dtype=self.dtype, device=value.device
                    )
                    state.host_weight = 0.0
                state.value.addcmul_(value.to(self.dtype), weight)
                state.weight.add_(weight)
            else:  # the common case: one in-place kernel per value
                state.value.add_(value, alpha=float(weight))
                if state.weight is None:
                    state.host_weight += float(weight)
                else:
                    state.weight.add_(float(weight))
            return
        if how == "last":
            state.value.copy_(value)
            state.host_value = None
        elif how == "sum":
            state.value.add_(value)
        elif how == "max":
            torch.maximum(state.value, value, out=state.value)
        else:  # min
            torch.minimum(state.value, value, out=state.value)

    def _update_host(self, state: _State, value: float, weight: Any) -> None:
        how = state.reduction
        old = state.host_value
        if how == "mean":
            state.host_value = (old or 0.0) + value * float(weight)
            if state.weight is None:
                state.host_weight += float(weight)
            else:  # tensor weights were seen before: keep one weight sum, on the device
                state.weight.add_(float(weight))
        elif how == "sum":
            state.host_value = (old or 0.0) + value
        elif how == "max":
            state.host_value = value if old is None else _nan_max(old, value)
        elif how == "min":
            state.host_value = value if old is None else _nan_min(old, value)
        else:
            state.host_value = value
            state.value = None

    def update_classes(self, labels: torch.Tensor, correct: torch.Tensor | None = None) -> None:
        """Add per-class counts of ``labels`` (and of ``correct`` predictions), sync-free.

        Uses a scatter-add into ``num_classes`` bins (a bincount with a fixed length: CUDA's
        ``torch.bincount`` reads the maximum label on the host, this does not). Labels must lie
        in ``[0, num_classes)``; that is not checked here, as checking would synchronize.

        Example:
            >>> import torch
            >>> metrics = LazyMetrics(num_classes=3)
            >>> metrics.update_classes(torch.tensor([0, 2, 2]), correct=torch.tensor([1, 1, 0]))
            >>> metrics.class_counts()
            {'total': [1, 0, 2], 'correct': [1, 0, 1], 'accuracy': [1.0, nan, 0.5]}
        """
        if self.num_classes is None:
            raise ValueError("update_classes needs num_classes; pass LazyMetrics(num_classes=...)")
        labels = labels.detach().reshape(-1).long()
        if self._class_total is None:
            self._class_total = torch.zeros(
                self.num_classes, dtype=torch.long, device=labels.device
            )
            self._class_correct = torch.zeros_like(self._class_total)
        self._class_total.index_add_(0, labels, torch.ones_like(labels))
        if correct is not None:
            correct = correct.detach().reshape(-1)
            if correct.shape != labels.shape:
                raise ValueError(
                    f"correct has {correct.numel()} entries but labels has {labels.numel()}; "
                    "pass one correctness flag per label"
                )
            self._class_correct.index_add_(0, labels, correct.long())

    # -- reading (one sync) --------------------------------------------------------------------
    def compute(self) -> dict[str, float]:
        """Return every metric as a Python float, with one device-to-host transfer."""
        device_parts: list[torch.Tensor] = []
        slots: list[tuple[str, _State]] = []
        for name, state in self._states.items():
            if state.value is not None:
                device = device_parts[0].device if device_parts else state.value.device
                device_parts.append(state.value.to(device).reshape(1))
                slots.append((name, state))
                if state.weight is not None:
                    device_parts.append(state.weight.to(device).reshape(1))
        fetched: list[float] = []
        if device_parts:
            fetched = torch.cat(device_parts).tolist()  # the one synchronization
            self.syncs += 1
        out: dict[str, float] = {}
        position = 0
        device_values: dict[str, tuple[float, float | None]] = {}
        for name, state in slots:
            value = fetched[position]
            position += 1
            weight = None
            if state.weight is not None:
                weight = fetched[position]
                position += 1
            device_values[name] = (value, weight)
        for name, state in self._states.items():
            out[name] = self._finish(state, device_values.get(name))
        self.latest = dict(out)
        self._since_sync = 0
        return out

    @staticmethod
    def _finish(state: _State, device: tuple[float, float | None] | None) -> float:
        how = state.reduction
        dev_value = device[0] if device else None
        host = state.host_value
        if how == "mean":
            weight = state.host_weight if device is None or device[1] is None else device[1]
            total = (dev_value or 0.0) + (host or 0.0)
            return total / weight if weight else float("nan")
        if how == "sum":
            return (dev_value or 0.0) + (host or 0.0)
        candidates = [v for v in (dev_value, host) if v is not None]
        if how == "max":
            return functools.reduce(_nan_max, candidates)
        if how == "min":
            return functools.reduce(_nan_min, candidates)
        return dev_value if dev_value is not None else host  # last

    def class_counts(self) -> dict[str, list]:
        """Per-class ``total``, ``correct`` and ``accuracy`` lists (one synchronization)."""
        if self._class_total is None:
            return {"total": [], "correct": [], "accuracy": []}
        both = torch.stack([self._class_total, self._class_correct]).tolist()
        self.syncs += 1
        total, correct = both
        accuracy = [c / t if t else float("nan") for c, t in zip(correct, total)]
        return {"total": total, "correct": correct, "accuracy": accuracy}

    # -- display -------------------------------------------------------------------------------
    @property
    def due(self) -> bool:
        """True when ``sync_every`` updates have passed since the last synchronization."""
        return self._since_sync >= self.sync_every or (not self.latest and self.updates > 0)

    def postfix(self) -> dict[str, str]:
        """Formatted values for ``tqdm.set_postfix``; syncs only when :attr:`due`.

        Example:
            >>> import torch
            >>> metrics = LazyMetrics(sync_every=10)
            >>> metrics.update(loss=torch.tensor(0.5))
            >>> metrics.postfix()
            {'loss': '0.5'}
        """
        if self.due:
            self.compute()
        return {name: f"{value:.{self.precision}g}" for name, value in self.latest.items()}

    def format(self) -> str:
        """One line ``"loss=0.31 nll=0.2"`` for a log line or a rich progress description."""
        return " ".join(f"{name}={value}" for name, value in self.postfix().items())

    def __repr__(self) -> str:
        names = ", ".join(f"{n}:{s.reduction}" for n, s in self._states.items())
        return f"LazyMetrics({names}; updates={self.updates}, sync_every={self.sync_every})"

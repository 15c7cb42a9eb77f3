"""HealthMonitor: declarative checks on training metrics, evaluated lazily.

Seed 004 watched three "health lines" by hand: pair coverage (moving average over 100 steps
>= 0.85), CE below 2.5 once the SDM loss is on, and the trend of train top-1, printing one line
per batch for misses and details every 50 steps. ``HealthMonitor`` does this from a list of
checks (objects or one-line strings, see :mod:`torchdoctor.train.health_checks`).

Values may be plain numbers or 0-d device tensors. Tensors are kept as they are and converted
all together, with one synchronization, every ``check_every`` steps: feeding the monitor every
step does not add a host sync per step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from torchdoctor.train.health_checks import Action, Alarm, Check, parse_check

_ACTIONS = ("log", "warn", "raise", "ignore")


class HealthWarning(UserWarning):
    """Warning category of alarms whose action is ``"warn"``.

    Example:
        >>> import warnings
        >>> warnings.simplefilter("error", HealthWarning)  # turn health warnings into errors
        >>> warnings.resetwarnings()
    """


class HealthError(RuntimeError):
    """Raised for an alarm whose action is ``"raise"``; ``.alarm`` holds the details.

    Example:
        >>> monitor = HealthMonitor(["finite(loss)"], action="raise")
        >>> try:
        ...     _ = monitor.observe(3, loss=float("nan"))
        ... except HealthError as error:
        ...     print(error.alarm.step, error.alarm.metric)
        3 loss
    """

    def __init__(self, alarm: Alarm) -> None:
        super().__init__(alarm.message)
        self.alarm = alarm


class HealthMonitor:
    """Evaluate health checks on the metrics given to :meth:`observe`.

    ``action`` (default for every check; a check's own ``action`` wins): ``"log"`` writes the
    alarm line with ``log`` (``print`` by default), ``"warn"`` issues a :class:`HealthWarning`,
    ``"raise"`` raises :class:`HealthError`, a callable is called with the :class:`Alarm`.
    Every ``detail_every`` steps a details line with the latest values and the moving averages
    is logged (``None``: never). Alarms are also kept in ``monitor.alarms``.

    Example:
        >>> lines = []
        >>> monitor = HealthMonitor(
        ...     ["ce < 2.5 once sdm_weight > 0", "mean(pair_coverage, 3) >= 0.85"],
        ...     log=lines.append, detail_every=None)
        >>> for step, (ce, w, cov) in enumerate([(3.0, 0.0, 1.0), (2.7, 0.1, 0.8), (1.9, 0.1, 0.5)]):
        ...     _ = monitor.observe(step, ce=ce, sdm_weight=w, pair_coverage=cov)
        >>> for line in lines:
        ...     print(line)
        [health] step 1: ce = 2.7, expected < 2.5 (check 'ce < 2.5 once sdm_weight > 0')
        [health] step 2: mean of pair_coverage over 3 = 0.7667, expected >= 0.85 (check 'mean(pair_coverage, 3) >= 0.85')
    """

    def __init__(
        self,
        checks: Iterable[Check | str],
        *,
        action: Action = "log",
        log: Callable[[str], Any] = print,
        check_every: int = 1,
        detail_every: int | None = 50,
        history: int = 1000,
    ) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        _validate_action(action)
        self.checks: list[Check] = [parse_check(c) if isinstance(c, str) else c for c in checks]
        for check in self.checks:
            if not isinstance(check, Check):
                raise TypeError(f"a health check must be a Check or a string, got {check!r}")
            _validate_action(check.action)
            needed = max(getattr(check, "window", 0), getattr(check, "over", -1) + 1)
            if needed > history:
                raise ValueError(
                    f"check '{check}' needs the last {needed} observations but history keeps "
                    f"{history}; pass history >= {needed}"
                )
        self.action = action
        self.log = log
        self.check_every = check_every
        self.detail_every = detail_every
        self.history_length = history
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.alarms: list[Alarm] = []
        self._active = [check.when is None for check in self.checks]
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._latest: dict[str, float] = {}
        self._last_step: int | None = None  # the latest evaluated step
        self.syncs = 0

    def observe(
        self, step: int, values: Mapping[str, Any] | None = None, **more: Any
    ) -> list[Alarm]:
        """Record this step's values; evaluate when ``step % check_every == 0``.

        Returns the alarms raised by this call's evaluation (empty when it was deferred).
        """
        merged = dict(values or {}, **more)
        self._pending.append((int(step), merged))
        if step % self.check_every == 0:
            return self.flush()
        return []

    def flush(self) -> list[Alarm]:
        """Convert pending tensors (one sync) and evaluate every pending step in order."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        self._resolve(pending)
        raised: list[Alarm] = []
        for step, values in pending:
            raised += self._evaluate(step, values)
        return raised

    def _resolve(self, pending: list[tuple[int, dict[str, Any]]]) -> None:
        slots = [
            (values, name)
            for _, values in pending
            for name, value in values.items()
            if isinstance(value, torch.Tensor)
        ]
        if not slots:
            return
        tensors = [values[name].detach().reshape(()) for values, name in slots]
        device = tensors[0].device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        numbers = torch.stack([t.to(device=device, dtype=dtype) for t in tensors]).tolist()
        self.syncs += 1
        for (values, name), number in zip(slots, numbers):
            values[name] = number

    def _evaluate(self, step: int, values: dict[str, Any]) -> list[Alarm]:
        self._last_step = step
        for name, value in values.items():
            points = self.history.setdefault(name, [])
            points.append((step, float(value)))
            if len(points) > self.history_length:
                del points[: len(points) - self.history_length]
            self._latest[name] = float(value)
        raised = []
        for index, check in enumerate(self.checks):
            if not self._active[index]:
                condition = check.when
                latest = self._latest.get(condition.metric)
                if latest is None or not condition.holds(latest):
                    continue
                self._active[index] = True
            alarm = check.evaluate(step, self.history)
            if alarm is not None:
                self.alarms.append(alarm)
                raised.append(alarm)
                self._act(check.action if check.action is not None else self.action, alarm)
        if self.detail_every and step % self.detail_every == 0:
            self.log(self.details(step))
        return raised

    def _act(self, action: Action, alarm: Alarm) -> None:
        if callable(action):
            action(alarm)
        elif action == "log":
            self.log(alarm.message)
        elif action == "warn":
            warnings.warn(alarm.message, HealthWarning, stacklevel=5)  # the caller of observe
        elif action == "raise":
            raise HealthError(alarm)

    def details(self, step: int | None = None) -> str:
        """One line with the latest value of every metric and the status of every check (at
        ``step``, by default the latest evaluated one)."""
        parts = [f"{name}={_fmt(value)}" for name, value in self._latest.items()]
        at = self._last_step if step is None else step
        firing = set()
        for alarm in reversed(self.alarms):  # alarms are in step order
            if at is None or alarm.step != at:
                break
            firing.add(alarm.check)
        states = []
        for index, check in enumerate(self.checks):
            state = "off" if not self._active[index] else "ok"
            if str(check) in firing:
                state = "ALARM"
            states.append(f"'{check}': {state}")
        where = f"step {step}" if step is not None else "latest"
        return f"[health] {where}: " + " ".join(parts) + " | " + "; ".join(states)

    def __repr__(self) -> str:
        return f"HealthMonitor({[str(c) for c in self.checks]}, alarms={len(self.alarms)})"


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _validate_action(action: Action) -> None:
    if action is None or callable(action):
        return
    if action not in _ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {_ACTIONS} or a callable")

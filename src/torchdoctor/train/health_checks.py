"""Declarative training-health checks and their one-line text form.

A check looks at a metric's history (the values a :class:`~torchdoctor.train.HealthMonitor`
was given, in step order) and returns an :class:`Alarm` when the run looks unhealthy:

    ce < 2.5 once sdm_weight > 0        Threshold, active from the first step sdm_weight > 0
    mean(pair_coverage, 100) >= 0.85    MovingAverage over the last 100 observations
    top1 not falling over 5             Trend: top1 now vs. 5 observations ago
    finite(loss, grad_norm)             Finite: NaN/Inf (finite() alone: every metric)
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
Action = str | Callable[["Alarm"], Any] | None


@dataclass(frozen=True)
class Alarm:
    """A failed check: which check, the metric, its value, the threshold and the step.

    Example:
        >>> alarm = Threshold("ce", "<", 2.5).evaluate(7, {"ce": [(7, 3.1)]})
        >>> alarm.metric, alarm.value, alarm.threshold, alarm.step
        ('ce', 3.1, 2.5, 7)
    """

    check: str
    metric: str
    value: float
    threshold: float | str
    step: int
    message: str

    def __str__(self) -> str:
        return self.message


def _op(symbol: str) -> Callable[[float, float], bool]:
    if symbol not in _OPS:
        raise ValueError(f"unknown comparison {symbol!r}; expected one of {list(_OPS)}")
    return _OPS[symbol]


@dataclass(frozen=True)
class Condition:
    """``metric op value``; a check with ``when=`` starts once this has been true.

    Example:
        >>> Condition("sdm_weight", ">", 0).holds(0.1)
        True
    """

    metric: str
    op: str
    value: float

    def __post_init__(self) -> None:
        _op(self.op)

    def holds(self, value: float) -> bool:
        return _op(self.op)(value, self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class Check:
    """Base class: ``evaluate(step, history)`` returns an Alarm or None.

    ``history`` maps each metric to its ``[(step, value), ...]`` so far (this step included).

    Example:
        >>> class Positive(Check):
        ...     metrics = ("loss",)
        ...     def evaluate(self, step, history):
        ...         value = history["loss"][-1][1]
        ...         return None if value > 0 else self._alarm("loss", value, 0.0, step, "loss <= 0")
        ...     def __str__(self):
        ...         return "loss > 0"
        >>> Positive().evaluate(3, {"loss": [(3, -1.0)]}).message
        "[health] step 3: loss <= 0 (check 'loss > 0')"
    """

    metrics: tuple[str, ...] = ()
    action: Action = None
    when: Condition | None = None

    def evaluate(
        self, step: int, history: Mapping[str, Sequence[tuple[int, float]]]
    ) -> Alarm | None:
        raise NotImplementedError

    def _alarm(
        self, metric: str, value: float, threshold: float | str, step: int, what: str
    ) -> Alarm:
        text = str(self)
        message = f"[health] step {step}: {what} (check '{text}')"
        return Alarm(text, metric, value, threshold, step, message)


class Threshold(Check):
    """Healthy while ``metric op threshold``; optionally only once ``when`` has held.

    Example:
        >>> check = Threshold("ce", "<", 2.5, when=Condition("sdm_weight", ">", 0))
        >>> str(check)
        'ce < 2.5 once sdm_weight > 0'
    """

    def __init__(
        self,
        metric: str,
        op: str,
        threshold: float,
        *,
        when: Condition | None = None,
        action: Action = None,
    ) -> None:
        self._compare = _op(op)
        self.metric, self.op, self.threshold = metric, op, float(threshold)
        self.metrics = (metric,)
        self.when, self.action = when, action

    def evaluate(self, step, history):
        points = history.get(self.metric)
        if not points or points[-1][0] != step:
            return None
        value = points[-1][1]
        if math.isnan(value) or not self._compare(value, self.threshold):
            return self._alarm(
                self.metric,
                value,
                self.threshold,
                step,
                f"{self.metric} = {value:.4g}, expected {self.op} {self.threshold:g}",
            )
        return None

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}" + (
            f" once {self.when}" if self.when else ""
        )


class MovingAverage(Check):
    """Healthy while the mean of the last ``window`` observations of ``metric`` ``op threshold``.

    Example:
        >>> str(MovingAverage("pair_coverage", ">=", 0.85, window=100))
        'mean(pair_coverage, 100) >= 0.85'
    """

    def __init__(
        self,
        metric: str,
        op: str,
        threshold: float,
        window: int = 100,
        *,
        min_points: int = 1,
        when: Condition | None = None,
        action: Action = None,
    ) -> None:
        if window < 1 or min_points < 1:
            raise ValueError(f"window and min_points must be >= 1, got {window}, {min_points}")
        self._compare = _op(op)
        self.metric, self.op, self.threshold = metric, op, float(threshold)
        self.window, self.min_points = window, min_points
        self.metrics = (metric,)
        self.when, self.action = when, action

    def evaluate(self, step, history):
        points = history.get(self.metric)
        if not points or points[-1][0] != step or len(points) < self.min_points:
            return None
        recent = [value for _, value in points[-self.window :]]
        mean = sum(recent) / len(recent)
        if math.isnan(mean) or not self._compare(mean, self.threshold):
            what = f"mean of {self.metric} over {len(recent)} = {mean:.4g}, expected {self.op} {self.threshold:g}"
            return self._alarm(self.metric, mean, self.threshold, step, what)
        return None

    def __str__(self) -> str:
        text = f"mean({self.metric}, {self.window}) {self.op} {self.threshold:g}"
        return text + (f" once {self.when}" if self.when else "")


class Trend(Check):
    """``metric`` not falling (or not rising) over the last ``over`` observations.

    Compares the newest value with the one ``over`` observations before; alarms when it fell
    (rose) by more than ``tolerance``.

    Example:
        >>> str(Trend("top1", "falling", over=5))
        'top1 not falling over 5'
    """

    def __init__(
        self,
        metric: str,
        direction: str = "falling",
        over: int = 5,
        *,
        tolerance: float = 0.0,
        when: Condition | None = None,
        action: Action = None,
    ) -> None:
        if direction not in ("falling", "rising"):
            raise ValueError(
                f"direction must be 'falling' or 'rising' (the bad way), got {direction!r}"
            )
        if over < 1:
            raise ValueError(f"over must be >= 1 observations, got {over}")
        self.metric, self.direction, self.over, self.tolerance = (
            metric,
            direction,
            over,
            float(tolerance),
        )
        self.metrics = (metric,)
        self.when, self.action = when, action

    def evaluate(self, step, history):
        points = history.get(self.metric)
        if not points or points[-1][0] != step or len(points) <= self.over:
            return None
        change = points[-1][1] - points[-1 - self.over][1]
        bad = change < -self.tolerance if self.direction == "falling" else change > self.tolerance
        if bad or math.isnan(change):
            limit = -self.tolerance if self.direction == "falling" else self.tolerance
            what = f"{self.metric} changed by {change:+.4g} over {self.over} observations, limit {limit:+g}"
            return self._alarm(self.metric, change, limit, step, what)
        return None

    def __str__(self) -> str:
        text = f"{self.metric} not {self.direction} over {self.over}"
        if self.tolerance:
            text += f" tolerance {self.tolerance:g}"
        return text + (f" once {self.when}" if self.when else "")


class Finite(Check):
    """Every named metric (all metrics when none are named) is finite: no NaN or Inf.

    Example:
        >>> str(Finite(["loss", "grad_norm"]))
        'finite(loss, grad_norm)'
    """

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        *,
        when: Condition | None = None,
        action: Action = None,
    ) -> None:
        self.metrics = tuple(metrics or ())
        self.when, self.action = when, action

    def evaluate(self, step, history):
        for metric in self.metrics or tuple(history):
            points = history.get(metric)
            if points and points[-1][0] == step and not math.isfinite(points[-1][1]):
                value = points[-1][1]
                return self._alarm(
                    metric, value, "finite", step, f"{metric} = {value}, expected a finite value"
                )
        return None

    def __str__(self) -> str:
        return f"finite({', '.join(self.metrics)})" + (f" once {self.when}" if self.when else "")


_NAME = r"[A-Za-z_][\w.]*"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OP = r"<=|>=|==|!=|<|>"
_ONCE = re.compile(
    rf"^(?P<body>.*?)\s+once\s+(?P<metric>{_NAME})\s*(?P<op>{_OP})\s*(?P<value>{_NUMBER})$"
)
_THRESHOLD = re.compile(rf"^(?P<metric>{_NAME})\s*(?P<op>{_OP})\s*(?P<value>{_NUMBER})$")
_MEAN = re.compile(
    rf"^mean\(\s*(?P<metric>{_NAME})\s*,\s*(?P<window>\d+)\s*\)\s*(?P<op>{_OP})\s*(?P<value>{_NUMBER})$"
)
_TREND = re.compile(
    rf"^(?P<metric>{_NAME})\s+not\s+(?P<direction>falling|rising)\s+over\s+(?P<over>\d+)(?:\s+tolerance\s+(?P<tolerance>{_NUMBER}))?$"
)
_FINITE = re.compile(rf"^finite(?:\(\s*(?P<metrics>{_NAME}(?:\s*,\s*{_NAME})*)?\s*\))?$")


def parse_check(text: str, action: Action = None) -> Check:
    """Build a check from its one-line form (see the module docstring for the grammar).

    Example:
        >>> check = parse_check("ce < 2.5 once sdm_weight > 0")
        >>> type(check).__name__, check.threshold, str(check.when)
        ('Threshold', 2.5, 'sdm_weight > 0')
    """
    source = " ".join(text.split())
    when = None
    once = _ONCE.match(source)
    if once:
        source = once["body"]
        when = Condition(once["metric"], once["op"], float(once["value"]))
    if match := _MEAN.match(source):
        return MovingAverage(
            match["metric"],
            match["op"],
            float(match["value"]),
            int(match["window"]),
            when=when,
            action=action,
        )
    if match := _TREND.match(source):
        tolerance = float(match["tolerance"]) if match["tolerance"] else 0.0
        return Trend(
            match["metric"],
            match["direction"],
            int(match["over"]),
            tolerance=tolerance,
            when=when,
            action=action,
        )
    if match := _FINITE.match(source):
        names = [n.strip() for n in match["metrics"].split(",")] if match["metrics"] else None
        return Finite(names, when=when, action=action)
    if match := _THRESHOLD.match(source):
        return Threshold(
            match["metric"], match["op"], float(match["value"]), when=when, action=action
        )
    raise ValueError(
        f"cannot parse health check {text!r}; expected one of: 'ce < 2.5', "
        "'ce < 2.5 once sdm_weight > 0', 'mean(pair_coverage, 100) >= 0.85', "
        "'top1 not falling over 5', 'finite(loss, grad_norm)'"
    )

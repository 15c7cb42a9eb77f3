"""Loss-weight schedules by epoch: warm-up at 0, then steps, a linear ramp or a cosine ramp.

Seed 004 turns the SDM loss off during warm-up and then raises its weight 0.1 -> 0.3 -> 0.5,
one value per epoch, printing the weight at the start of each epoch to confirm it took effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_KINDS = ("step", "linear", "cosine")


class WeightSchedule:
    """A loss weight as a function of the (0-based, possibly fractional) epoch.

    Epochs ``0 .. warmup_epochs - 1`` have weight 0. Then:

    - ``"step"`` (default when ``values`` is given): epoch ``warmup_epochs + i`` gets
      ``values[i]``; the last value holds afterwards.
    - ``"linear"`` / ``"cosine"``: from ``start`` to ``end`` over ``ramp_epochs`` epochs, then
      ``end``. Pass a fractional epoch (``epoch + step / steps_per_epoch``) for a smooth ramp.

    ``str(schedule)`` describes it; ``schedule.state(epoch)`` is a one-line log entry.

    Example:
        >>> schedule = WeightSchedule([0.1, 0.3, 0.5], warmup_epochs=2)
        >>> [schedule(epoch) for epoch in range(6)]
        [0.0, 0.0, 0.1, 0.3, 0.5, 0.5]
        >>> schedule.state(3)
        '[sdm] epoch=3 weight=0.300 (step 2/3 after 2 warm-up epochs)'
    """

    def __init__(
        self,
        values: Sequence[float] | None = None,
        *,
        warmup_epochs: int = 0,
        kind: str | None = None,
        start: float = 0.0,
        end: float | None = None,
        ramp_epochs: float = 1.0,
        name: str = "sdm",
    ) -> None:
        kind = kind or ("step" if values is not None else "linear")
        if kind not in _KINDS:
            raise ValueError(f"unknown schedule kind {kind!r}; expected one of {_KINDS}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if kind == "step":
            if not values:
                raise ValueError("a step schedule needs values, e.g. WeightSchedule([0.1, 0.3])")
            self.values = [float(v) for v in values]
        else:
            if values is not None:
                raise ValueError(f"a {kind} schedule takes start/end, not values")
            if end is None:
                raise ValueError(f"a {kind} schedule needs end=, the final weight")
            if ramp_epochs <= 0:
                raise ValueError(f"ramp_epochs must be > 0, got {ramp_epochs}")
            self.values = []
        self.kind = kind
        self.warmup_epochs = warmup_epochs
        self.start = float(start)
        self.end = None if end is None else float(end)
        self.ramp_epochs = float(ramp_epochs)
        self.name = name

    def __call__(self, epoch: float) -> float:
        """The weight at ``epoch`` (0-based; fractions allowed)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch < self.warmup_epochs:
            return 0.0
        since = epoch - self.warmup_epochs
        if self.kind == "step":
            return self.values[min(int(since), len(self.values) - 1)]
        fraction = min(since / self.ramp_epochs, 1.0)
        if self.kind == "cosine":
            fraction = 0.5 * (1.0 - math.cos(math.pi * fraction))
        assert self.end is not None
        return self.start + (self.end - self.start) * fraction

    def active(self, epoch: float) -> bool:
        """True when the weight is non-zero (the loss should be computed at all)."""
        return self(epoch) != 0.0

    def state(self, epoch: float) -> str:
        """One log line naming the epoch, the weight and where in the schedule it is."""
        weight = self(epoch)
        if epoch < self.warmup_epochs:
            where = f"warm-up {int(epoch) + 1}/{self.warmup_epochs}"
        elif self.kind == "step":
            index = min(int(epoch - self.warmup_epochs), len(self.values) - 1)
            where = f"step {index + 1}/{len(self.values)} after {self.warmup_epochs} warm-up epochs"
        else:
            done = min((epoch - self.warmup_epochs) / self.ramp_epochs, 1.0)
            where = f"{self.kind} ramp {done:.0%}"
        return f"[{self.name}] epoch={epoch:g} weight={weight:.3f} ({where})"

    def __repr__(self) -> str:
        if self.kind == "step":
            body = f"{self.values}"
        else:
            body = f"kind={self.kind!r}, start={self.start}, end={self.end}, ramp_epochs={self.ramp_epochs:g}"
        return f"WeightSchedule({body}, warmup_epochs={self.warmup_epochs})"

    __str__ = __repr__

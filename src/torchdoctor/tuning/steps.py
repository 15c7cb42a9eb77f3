"""Step boundaries of an unmodified script inside a trial, its step times, and when to stop it.

The same rules as ``torchdoctor run`` (``collect/profiler.py``), without per-module timing: a
step ends at each step of the first optimizer that steps; with no optimizer, at each
``backward()`` (from the second one on); with no backward, at each call of the first outermost
module (an inference loop). After ``warmup`` steps, ``steps`` steps are measured; then the
watch raises :class:`~torchdoctor.collect.script.StopScript` at the next boundary, so a script
that trains forever ends cleanly. ``max_seconds`` ends the measured window early (at least
``MIN_STEPS`` steps are always measured).

Times are ``perf_counter`` on CPU and CUDA events (resolved once, at the end) when CUDA is in
use: no synchronization per step. Each boundary also reads the process's kernel and user CPU
time and minor page faults (``getrusage``, about 1 us; absent on Windows): :meth:`StepWatch.kernel`
sums them over the measured steps (the ``malloc_cache`` knob applies when they are many). Values to compare between trials (the tensor each step calls
``backward()`` on, or the outermost module's output) are kept as detached tensors and read at
the end.

Example:
    >>> watch = StepWatch(warmup=1, steps=2)
    >>> for _ in range(3):
    ...     watch.backward_done()
    >>> watch.mode, len(watch.marks)
    ('backward', 2)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

try:  # (not on Windows: the steps' kernel time is unknown there)
    from resource import RUSAGE_SELF, getrusage
except ImportError:  # pragma: no cover
    getrusage = None

from torchdoctor.collect.script import StopScript

#: the fewest measured steps a time-bounded window stops at
MIN_STEPS = 3


class StepWatch:
    """Finds step boundaries, times steps, keeps per-step values and stops the script.

    Example:
        >>> watch = StepWatch(warmup=0, steps=2)
        >>> watch.step_end(); watch.step_end()
        >>> watch.mode, len(watch.step_ms())
        ('manual', 1)
        >>> watch.step_end()
        Traceback (most recent call last):
        ...
        torchdoctor.collect.script.StopScript: torchdoctor tune: 2 measured steps done
    """

    def __init__(
        self,
        warmup: int = 2,
        steps: int = 10,
        max_seconds: float | None = None,
        on_measure: Callable[[], None] | None = None,
        expect: str | None = None,
        grace_s: float | None = None,
    ) -> None:
        self.warmup = warmup
        self.steps = steps
        self.max_seconds = max_seconds
        self.on_measure = on_measure
        # the boundary an earlier trial settled on ("optimizer", "backward"): model calls before
        # it (a reinforcement-learning rollout) are no inference loop to measure
        self.expect = expect
        # steps counted at model calls with no backward or optimizer seen yet go on this long
        # past the last measured one: a rollout before training ends in an optimizer step
        self.grace_s = grace_s
        self._grace_until: int | None = None
        self.mode: str | None = None
        self.anchor: Any = None
        self.marks: list[tuple[int, Any]] = []  # (perf_counter_ns, CUDA event or None)
        self.data_ns: list[int] = []  # cumulative DataLoader wait at each mark
        self.usage: list[Any] = []  # the process's (kernel s, user s, minor faults) at each mark
        self.values: list[list[Any]] = []  # per step: detached tensors recorded in it
        self._pending: list[Any] = []
        self.backwards = 0
        self.optimizer_seen = False
        self.root_calls = 0
        self.data_total = 0
        self.stop_requested = False
        self._measure_start: int | None = None

    # -- events -------------------------------------------------------------------------------
    def step_end(self) -> None:
        """A step ends here (``torchdoctor.tune``: each call of the step function); from the
        first call on, the watch ignores optimizer, backward and module events."""
        if self.mode != "manual":
            self._switch("manual", None)
        else:
            self._mark()

    def optimizer_step(self, optimizer: Any) -> None:
        """After an optimizer's ``step()``."""
        self.optimizer_seen = True
        if self.mode == "manual":
            return
        if self.mode != "optimizer":
            self._switch("optimizer", optimizer)
        elif optimizer is self.anchor:
            self._mark()

    def backward_done(self) -> None:
        """After a ``backward()`` pass."""
        self.backwards += self.mode == "manual"
        if self.mode == "backward":
            self._mark()
        elif self.mode is None and not self.optimizer_seen:
            self.backwards += 1
            if self.backwards >= 2:
                self._switch("backward", None)

    def root_call(self, module: Any) -> None:
        """Before a call of an outermost module."""
        if self.mode == "manual":
            return
        if self.mode == "module":
            if module is self.anchor:
                self._mark()
        elif self.mode is None and not (self.backwards or self.optimizer_seen or self.expect):
            if self.anchor is None:
                self.anchor = module
            elif module is self.anchor:
                self._switch("module", module)

    def record(self, tensor: Any) -> None:
        """Keep a value of this step for the comparison between trials (read at the end)."""
        if isinstance(tensor, torch.Tensor):
            self._pending.append(tensor.detach())

    # -- boundaries ---------------------------------------------------------------------------
    def _switch(self, mode: str, anchor: Any) -> None:
        self.mode, self.anchor = mode, anchor
        self.marks.clear()
        self.data_ns.clear()
        self.usage.clear()
        self.values.clear()
        self._pending = []
        self._measure_start = None
        self._mark()

    def _mark(self) -> None:
        event = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        now = time.perf_counter_ns()
        if self.marks:
            self.values.append(self._pending)
        self._pending = []
        self.marks.append((now, event))
        self.data_ns.append(self.data_total)
        if getrusage is not None:
            usage = getrusage(RUSAGE_SELF)
            self.usage.append((usage.ru_stime, usage.ru_utime, usage.ru_minflt))
        done = len(self.marks) - 1
        if done == self.warmup and self._measure_start is None:
            self._measure_start = now
            if self.on_measure is not None:
                self.on_measure()
        measured = done - self.warmup
        out_of_time = (
            self.max_seconds is not None
            and self._measure_start is not None
            and measured >= MIN_STEPS
            and (now - self._measure_start) / 1e9 > self.max_seconds
        )
        if measured >= self.steps or out_of_time or self.stop_requested:
            if self._in_grace(now):
                return
            self.stop_requested = True
            raise StopScript(f"torchdoctor tune: {measured} measured steps done")

    def _in_grace(self, now: int) -> bool:
        """Model-call steps with no backward or optimizer yet go on for ``grace_s``: in
        stable-baselines3's PPO, 512 policy calls come before the first optimizer step,
        which switches the boundary (and the measurement starts over).

        Example:
            >>> watch = StepWatch(warmup=0, steps=1, grace_s=60.0)
            >>> watch.mode = "module"
            >>> watch._in_grace(0), watch._in_grace(61 * 10**9)
            (True, False)
        """
        if self.mode != "module" or not self.grace_s or self.stop_requested:
            return False
        if self._grace_until is None:
            self._grace_until = now + int(self.grace_s * 1e9)
        return now < self._grace_until

    # -- results ------------------------------------------------------------------------------
    def step_ms(self) -> list[float]:
        """Milliseconds of every completed step, warm-up included (CUDA events when present)."""
        marks = self.marks
        if len(marks) < 2:
            return []
        if all(event is not None for _, event in marks):
            marks[-1][1].synchronize()
            return [a[1].elapsed_time(b[1]) for a, b in zip(marks, marks[1:], strict=False)]
        return [(b[0] - a[0]) / 1e6 for a, b in zip(marks, marks[1:], strict=False)]

    def data_ms(self) -> list[float]:
        """Milliseconds each completed step waited for DataLoader batches."""
        d = self.data_ns
        return [(b - a) / 1e6 for a, b in zip(d, d[1:], strict=False)]

    def kernel(self) -> dict[str, float] | None:
        """The process's kernel and user CPU ms and minor page faults over the measured steps
        (``steps``: how many), or None before two measured marks (or without ``getrusage``).

        Example:
            >>> watch = StepWatch(warmup=0, steps=5)
            >>> watch.step_end(); watch.step_end(); watch.step_end()
            >>> sorted(watch.kernel()), watch.kernel()["steps"]
            (['minor_faults', 'steps', 'sys_ms', 'user_ms'], 2)
        """
        usage = self.usage[self.warmup :]
        if len(usage) < 2 or len(self.usage) != len(self.marks):
            return None
        (sys0, user0, faults0), (sys1, user1, faults1) = usage[0], usage[-1]
        return {"sys_ms": 1e3 * (sys1 - sys0), "user_ms": 1e3 * (user1 - user0),
                "minor_faults": faults1 - faults0, "steps": len(usage) - 1}  # fmt: skip

    def recorded_values(self) -> list[float]:
        """The recorded values, step by step, as floats (the one read of them: here)."""
        out: list[float] = []
        for step in self.values:
            for tensor in step:
                value = tensor.float()
                out.append(float(value.sum() if value.numel() != 1 else value.reshape(())))
        return out

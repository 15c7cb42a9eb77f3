"""Step phases (data, forward, backward, optimizer, other) as a small state machine.

The phases of a step partition its wall time: every phase change records one clock token, so
the phase durations of a step add up to the step exactly. Rules:

- the first outermost module call of a step switches the current phase to ``forward``; with
  grad enabled it stays ``forward`` (the loss is part of the forward pass) until backward;
  under ``no_grad``/``inference_mode`` it returns to the previous phase when the call returns;
- ``torch.autograd.backward`` / ``torch.autograd.grad`` (``Tensor.backward`` calls the
  former) push ``backward``; when they return, a ``forward`` switched on earlier returns to
  the phase it replaced (``other`` in a plain loop, ``optimizer`` inside an LBFGS closure);
- optimizer steps (global optimizer step hooks) push ``optimizer``; in a loop with backward()
  and no optimizer, a ``no_grad`` block opened between passes (a hand-written update) pushes
  ``optimizer`` and, once it closes, the grad-enabled code until backward is ``forward``
  (``Profiler._no_grad_enter``);
- ``next()`` on a ``torch.utils.data.DataLoader`` iterator, or on any iterable wrapped by
  ``Profiler.wrap_loader``, pushes ``data``.

``collect.state.STATE.phase`` always holds the current phase (the sync audit reads it), and
``PhaseMachine.on_change`` (when set) is called with every new phase: the hot-lines collector
parks its function mode in the optimizer and data phases (``collect/lines.py``).

Example:
    >>> machine = PhaseMachine(now=iter(range(100)).__next__)
    >>> machine.begin_step()
    >>> machine.push("data"); machine.pop()
    >>> [phase for _, phase in machine.segments]
    ['other', 'data', 'other']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchdoctor.collect.state import STATE


class PhaseMachine:
    """Tracks the current phase and records (token, phase) at every change.

    Example:
        >>> ticks = iter(range(100))
        >>> machine = PhaseMachine(now=lambda: next(ticks))
        >>> machine.begin_step()
        >>> machine.enter_forward()
        >>> machine.push("backward")
        >>> machine.pop_backward()
        >>> machine.segments, machine.phase
        ([(0, 'other'), (1, 'forward'), (2, 'backward'), (3, 'other')], 'other')
        >>> machine.reset()
    """

    def __init__(self, now: Callable[[], Any]) -> None:
        self.now = now
        self.stack: list[list[Any]] = [["other", None]]  # [phase, phase it replaced or None]
        self.segments: list[tuple[Any, str]] = []
        self.on_change: Callable[[str], None] | None = None  # called with each new phase

    @property
    def phase(self) -> str:
        return self.stack[-1][0]

    def _mark(self, phase: str) -> None:
        self.segments.append((self.now(), phase))
        STATE.phase = phase
        if self.on_change is not None:
            self.on_change(phase)

    def begin_step(self, token: Any | None = None) -> None:
        """Start a new segment list for a step, keeping the current phase."""
        phase = self.phase
        self.segments = [(self.now() if token is None else token, phase)]
        STATE.phase = phase
        if self.on_change is not None:
            self.on_change(phase)

    def push(self, phase: str) -> None:
        self.stack.append([phase, None])
        self._mark(phase)

    def pop(self) -> None:
        if len(self.stack) > 1:
            self.stack.pop()
        self._mark(self.stack[-1][0])

    def pop_backward(self, in_forward: bool = False) -> None:
        """Leave backward: a forward switched on before it returns to what it replaced, unless
        the pass was part of it (``in_forward``: a ``grad`` pass with ``create_graph=True``, a
        PINN's derivatives, whose loss the forward goes on computing).

        Example:
            >>> machine = PhaseMachine(now=iter(range(100)).__next__)
            >>> machine.begin_step(); machine.enter_forward()
            >>> machine.push("backward"); machine.pop_backward(in_forward=True)
            >>> machine.phase, (machine.push("backward"), machine.pop_backward(), machine.phase)[2]
            ('forward', 'other')
        """
        if len(self.stack) > 1:
            self.stack.pop()
        top = self.stack[-1]
        if top[0] == "forward" and top[1] is not None and not in_forward:
            top[0], top[1] = top[1], None
        self._mark(top[0])

    def enter_forward(self) -> None:
        """The first outermost module call: the current phase becomes ``forward``."""
        top = self.stack[-1]
        if top[0] in ("forward", "backward", "data"):
            return
        top[1] = top[0]
        top[0] = "forward"
        self._mark("forward")

    def leave_forward_without_grad(self) -> None:
        """An outermost call under no_grad returned: restore the phase it replaced."""
        top = self.stack[-1]
        if top[0] == "forward" and top[1] is not None:
            top[0], top[1] = top[1], None
            self._mark(top[0])

    def reset(self) -> None:
        self.stack = [["other", None]]
        STATE.phase = "other"
        if self.on_change is not None:
            self.on_change("other")


def phase_durations(segments: list[tuple[float, str]], end_ns: float) -> dict[str, float]:
    """Milliseconds per phase from resolved ``(ns, phase)`` segments ending at ``end_ns``.

    Example:
        >>> phase_durations([(0.0, "data"), (1e6, "forward")], 3e6)["forward"]
        2.0
    """
    out = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0, "other": 0.0}
    for (start, phase), nxt in zip(segments, [*segments[1:], (end_ns, "")]):
        out[phase] = out.get(phase, 0.0) + max(0.0, nxt[0] - start) / 1e6
    return out

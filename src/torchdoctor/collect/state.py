"""Process-wide collection state shared by the profiler, regions and the sync audit.

Readers (regions, the sync audit) look at :data:`STATE` to learn whether a profiler is active,
which phase the step is in and which step is running. Only the profiler writes it.
"""

from __future__ import annotations


class _State:
    __slots__ = ("profiler", "phase", "step_index", "module_stack")

    def __init__(self) -> None:
        self.profiler = None  # the active Profiler, or None: regions are then no-ops
        self.phase = "other"  # one of session_read.PHASES
        self.step_index = -1  # index of the running step, -1 outside any step
        self.module_stack: list[str] = []  # qualified paths of the modules now in forward


STATE = _State()


def current_phase() -> str:
    """The phase of the running step: 'data', 'forward', 'backward', 'optimizer' or 'other'.

    Example:
        >>> from torchdoctor.collect.phases import PhaseMachine
        >>> machine = PhaseMachine(now=lambda: 0)
        >>> machine.enter_forward()
        >>> current_phase()
        'forward'
        >>> machine.reset()
        >>> current_phase()
        'other'
    """
    return STATE.phase


def current_step() -> int:
    """Index of the running step, or -1 when no profiler is running one.

    Example:
        >>> import torch
        >>> from torchdoctor.collect.profiler import Profiler
        >>> current_step()  # no profiler running
        -1
        >>> with Profiler(torch.nn.Linear(2, 2), syncs=False) as prof:
        ...     seen = []
        ...     for _ in range(2):
        ...         seen.append(current_step())
        ...         prof.step()
        >>> seen
        [0, 1]
    """
    return STATE.step_index

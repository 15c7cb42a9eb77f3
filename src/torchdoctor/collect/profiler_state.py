"""What a profiler has collected, as one typed object handed to session building.

:class:`ProfilerState` holds the options of a run, the per-step summaries, the kept timelines,
the notes and the node registry (the :class:`~torchdoctor.collect.recorder.Recorder`);
``collect/finish.py`` builds the Session from it alone. :class:`StepBoundary` names how steps
were cut (the Session's ``config.step_boundary`` is its value).

Example:
    >>> state = ProfilerState(warmup=1)
    >>> state.boundary_name, StepBoundary.OPTIMIZER.note
    ('whole_run', 'steps end at optimizer.step() calls')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class StepBoundary(str, Enum):
    """How steps are cut: by markers, optimizer steps, backward calls, outermost module calls,
    calls of a step function, or not at all (the whole run is one step).

    Example:
        >>> StepBoundary("module").note
        'no backward was seen: each call of the outermost module is one step'
    """

    MARKER = "marker"
    OPTIMIZER = "optimizer"
    BACKWARD = "backward"
    MODULE = "module"
    WHOLE_RUN = "whole_run"
    STEP_FN = "step_fn"

    @property
    def note(self) -> str:
        """The sentence the Session's notes open with."""
        return _NOTES[self]


_NOTES = {
    StepBoundary.MARKER: "steps end at torchdoctor.step() / Profiler.step() calls",
    StepBoundary.OPTIMIZER: "steps end at optimizer.step() calls",
    StepBoundary.BACKWARD: "no optimizer step was seen: steps end at backward() calls",
    StepBoundary.MODULE: "no backward was seen: each call of the outermost module is one step",
    StepBoundary.WHOLE_RUN: "no step boundary was seen: the whole run is one step",
    StepBoundary.STEP_FN: "each call of the step function is one step",
}


@dataclass
class ProfilerState:
    """Options and collected data of one profiler run (see the module docstring).

    ``summaries``: one dict per kept step (``collect/aggregate.py``), ``detailed`` saying
    whether the module tree was recorded in it; ``timelines``: raw events of a few detailed
    steps (the representative timeline); ``memory_summary``: the step that counted
    activation bytes.

    Example:
        >>> ProfilerState().detailed_summaries()
        []
    """

    warmup: int = 0
    label: str | None = None
    syncs: bool = False
    memory: bool = True
    backward: bool = True
    hot_lines: bool = True
    device: str = "cpu"
    timing: str = "perf_counter"
    detail: dict[str, Any] = field(default_factory=dict)
    boundary: StepBoundary | None = None
    recorder: Any = None
    summaries: list[dict[str, Any]] = field(default_factory=list)
    timelines: list[dict[str, Any]] = field(default_factory=list)
    memory_summary: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    loaders: dict[int, dict[str, Any]] = field(default_factory=dict)
    bookkeeping_ns: int = 0  # host time spent closing steps (measured, exact)
    hook_ns: int = 0  # host time spent inside the module hooks of kept detailed steps
    interrupted: bool = False
    error: str | None = None

    @property
    def boundary_name(self) -> str:
        return (self.boundary or StepBoundary.WHOLE_RUN).value

    def drop_steps(self) -> None:
        """Forget the steps kept so far (they were partial: the boundary was revised)."""
        self.summaries.clear()
        self.timelines.clear()

    def detailed_summaries(self) -> list[dict[str, Any]]:
        return [s for s in self.summaries if s.get("detailed", True)]

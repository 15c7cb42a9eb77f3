"""The run's long steps (an evaluation, a checkpoint, sample generation every N steps) among
every step's wall time: the steps the session lists and, in a long run that lists a sample of
its steps, the long light steps the sample left out (``config.step_records.long_unkept``, see
``collect/step_store.py``). An evaluation every 300 steps of a 3,000-step run kept 3 of its 9
long steps in the sample: read as every 600 steps, at the sample's rate (44% of the run where
it was 33%). The unkept ones carry their index and wall time only (``unkept``): what the long
steps ran (their phases, model calls, host time) is told by the kept ones.

Example:
    >>> steps = [{"index": i, "wall_ms": 50.0 if i == 30 else 1.0} for i in range(40)]
    >>> [s["index"] for s in long_steps({"steps": steps}).long]
    [30]
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any, NamedTuple

from torchdoctor.analyze.advice.base import one_step_run
from torchdoctor.analyze.advice.decode_cache import growing_runs
from torchdoctor.analyze.advice.optimizer_stages import stage_steps
from torchdoctor.analyze.advice.periodic_loops import at_light_cost, detailed_long, early_evaluation
from torchdoctor.session_read import step_count

#: a step this many times the median (and LONG_MS past it) is a long step
LONG, LONG_MS = 2.0, 5.0
#: light steps needed to tell a long step from the rest
MIN_STEPS = 10


def _long_steps(steps: list[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], float]:
    """The long steps among ``steps`` (the first two left out, warm-up residue, unless they
    evaluated; those that only waited for a core, :func:`_waited`, too) and the median wall
    time."""
    median = statistics.median(float(s["wall_ms"]) for s in steps)
    long = [
        s for k, s in enumerate(steps) if (int(s.get("index", k)) >= 2 or early_evaluation(s))
        and _is_long(float(s["wall_ms"]), median)
    ]  # fmt: skip
    waited = [s for s in long if _waited(s, median)]
    return ([s for s in long if not _waited(s, median)] if len(waited) < len(long) else long), median


def _waited(step: Mapping[str, Any], median: float) -> bool:
    """Whether a long step is long only for its wait for a core (most of its time waiting, its
    own work no long step's), where other long steps are long for their own: a busy host's
    slowed steps among a sampled run's evaluations made them 26 of 2,999 with no period, told
    as a busy machine (the steps that all waited stay, the busy machine's advice).

    Example:
        >>> _waited({"wall_ms": 16.3, "cpu_wait_ms": 12.0}, 2.4), _waited({"wall_ms": 520.0}, 2.4)
        (True, False)
    """
    wait = float(step.get("cpu_wait_ms") or 0.0)
    wall = float(step["wall_ms"])
    return wait > 0.4 * wall and not _is_long(wall - wait, median)


def _is_long(wall_ms: float, median: float) -> bool:
    return wall_ms > LONG * median and wall_ms - median > LONG_MS


def _as_light(step: Mapping[str, Any]) -> dict[str, Any]:
    """A detailed step's record with its forward counted in ``other``, as a light step's is.

    Example:
        >>> _as_light({"index": 3, "phases": {"forward": 2.0, "other": 5.0}})["phases"]
        {'forward': 0.0, 'other': 7.0}
    """
    phases = dict(step.get("phases") or {})
    phases["other"] = float(phases.get("other") or 0.0) + float(phases.get("forward") or 0.0)
    phases["forward"] = 0.0
    return {**step, "phases": phases}


def unkept_long(session: Mapping[str, Any], median: float) -> list[dict[str, Any]]:
    """The long light steps a sampled run's list left out, as records of their index and wall
    time (``unkept``: no phases, no model calls), over LONG x ``median`` for their own work
    (their wall less their wait for a core: a busy host's slowed steps are no periodic work).

    Example:
        >>> records = {"long_unkept": [[599, 480.0, 479.0], [700, 60.0, 4.0], [800, 6.0, 6.0]]}
        >>> unkept_long({"config": {"step_records": records}}, 2.4)
        [{'index': 599, 'wall_ms': 480.0, 'detailed': False, 'unkept': True}]
    """
    records = (session.get("config") or {}).get("step_records") or {}
    return [{"index": int(i), "wall_ms": float(ms), "detailed": False, "unkept": True}
            for i, ms, own in records.get("long_unkept") or ()
            if _is_long(float(ms), median) and _is_long(float(own), median)]  # fmt: skip


def described(long: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The long steps whose records tell what they ran (the session lists them)."""
    return [s for s in long if not s.get("unkept")] or long


class LongSteps(NamedTuple):
    """The steps :func:`long_steps` found: all recorded, the light ones, the long ones (in
    light steps' terms, by index; a sampled run's unkept ones too), the light steps' median
    wall ms.

    Example:
        >>> LongSteps([], [], [], 1.5).median
        1.5
    """

    recorded: list[Mapping[str, Any]]
    steps: list[Mapping[str, Any]]
    long: list[Mapping[str, Any]]
    median: float
    whole: bool = False  # a sampled run's long steps all listed (``long_unkept``)

    def run_steps(self, session: Mapping[str, Any]) -> int:
        """The steps of the run the long ones are found among: the recorded ones, or a sampled
        run's every step (the unkept long ones among them)."""
        return max(len(self.recorded), step_count(session)) if self.whole else len(self.recorded)

    def light_steps(self, session: Mapping[str, Any]) -> int:
        """How many light steps the run had (a sampled run's: every step but the detailed)."""
        return self.run_steps(session) - (len(self.recorded) - len(self.steps))

    def run_ms(self, session: Mapping[str, Any]) -> float:
        """The steps' time, the hooks' time of the detailed long ones left out: the recorded
        steps', or a sampled run's every step's (its streamed mean x its steps)."""
        hooks = sum(float(s.get("detailed_wall_ms", s["wall_ms"])) - float(s["wall_ms"])
                    for s in self.long)  # fmt: skip
        mean = float((session.get("step_ms") or {}).get("mean") or 0.0)
        steps = self.run_steps(session)
        if steps > len(self.recorded) and mean > 0:
            return mean * steps - hooks
        return sum(float(s["wall_ms"]) for s in self.recorded) - hooks


def long_steps(session: Mapping[str, Any], min_steps: int = MIN_STEPS) -> LongSteps | None:
    """The run's long steps (> LONG x the median light step, LONG_MS past it; the first two
    left out), detailed ones left out of the tree for their length included, and a sampled
    run's unkept ones; None when fewer than ``min_steps`` light steps tell them (or the run is
    one step).
    """
    recorded = [s for s in stage_steps(session) if s.get("wall_ms") is not None]  # (LBFGS's
    steps = [s for s in recorded if not s.get("detailed")]  # after Adam's: a stage; hooks slow)
    if len(steps) < min_steps or one_step_run(session):
        return None
    long, median = _long_steps(steps)
    records = (session.get("config") or {}).get("step_records") or {}
    whole = "long_unkept" in records and len(recorded) == len(session.get("steps") or ())
    if whole:  # (not a later stage's steps alone: the unkept ones' stage is not known)
        long += unkept_long(session, median)
    # detailed steps left out of the tree for their length are long steps too (in light
    # steps' terms: their forward counted with the work between steps)
    left = set(detailed_long(session))
    module = (session.get("config") or {}).get("step_boundary") == "module"  # (light steps
    long += [s if module else _as_light(s)  # there record the forward too: kept as it is)
             for s in recorded if s.get("detailed") and s.get("index") in left]
    long.sort(key=lambda s: int(s.get("index", 0)))
    if (session.get("config") or {}).get("step_boundary") == "module":  # (steps of a decode
        grown = {id(s) for s in growing_runs([s for s in recorded if s.get("input_shape")])}
        long = [s for s in long if id(s) not in grown]  # without cache: decode-without-cache's)
    light_long = [float(s["wall_ms"]) for s in long if not s.get("detailed")]
    if light_long:  # (the light ones tell the work's own length: see at_light_cost)
        typical = statistics.median(light_long)
        long = [at_light_cost(s, typical) if s.get("detailed") else s for s in long]
    return LongSteps(recorded, steps, long, median, whole)

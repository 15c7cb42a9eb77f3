"""Where a run's time went outside its profiled steps, said under a report's headline when the
steps are a minority of the run, or when steps dropped at a revised boundary were a sizeable
part of it (``config.run_time``, written by ``collect/finish.py``).

Example:
    >>> run_time_text({"config": {}}) is None
    True
"""

from __future__ import annotations

from typing import Any

#: the run's time outside its profiled steps is said when the steps are under this share of
#: a run at least RUN_TIME_MIN_MS long
RUN_TIME_SHARE, RUN_TIME_MIN_MS = 0.5, 1000.0
#: ... or when steps dropped at a revised boundary took at least this share of the run (timm's
#: benchmark.py --bench both: its inference benchmark, 22% of the run, was in no table)
DROPPED_SHARE = 0.1


def run_time_text(session: Any) -> str | None:
    """Where the run's time went when its profiled steps are a minority of it, or when steps
    dropped at a revised boundary took :data:`DROPPED_SHARE` of it (``config.run_time``): a
    report of the steps alone would hide the rest, else None.

    Example:
        >>> rt = {"total_ms": 7800.0, "steps_ms": 960.0, "before_ms": 6400.0, "after_ms": 440.0}
        >>> run_time_text({"config": {"run_time": rt}})
        'the run took 7.8 s; the profiled steps 0.96 s (12%), before them 6.4 s (start-up: imports, data, model, and the warm-up steps), after them 0.44 s'
        >>> rt = {"total_ms": 28_500.0, "steps_ms": 19_500.0, "before_ms": 8_300.0,
        ...       "after_ms": 700.0, "dropped_steps": 54, "dropped_ms": 6_300.0}
        >>> text = run_time_text({"config": {"run_time": rt}})
        >>> text[text.index("; 6.3 s"):][:73]
        '; 6.3 s (22% of the run) in 54 earlier steps cut at another boundary, dro'
    """
    run = (session.get("config") or {}).get("run_time") or {}
    total, steps = run.get("total_ms"), run.get("steps_ms")
    if not isinstance(total, (int, float)) or not isinstance(steps, (int, float)):
        return None
    dropped, dropped_steps = float(run.get("dropped_ms") or 0.0), run.get("dropped_steps")
    if total < RUN_TIME_MIN_MS or (steps >= RUN_TIME_SHARE * total
                                   and dropped < DROPPED_SHARE * total):  # fmt: skip
        return None
    before, after = float(run.get("before_ms") or 0.0), float(run.get("after_ms") or 0.0)
    compiled = float(run.get("compile_before_ms") or 0.0)
    cut = (
        f"; {dropped / 1e3:.3g} s ({100 * dropped / total:.0f}% of the run) in {dropped_steps} "
        "earlier steps cut at another boundary, dropped when the step boundary was revised (a "
        "different loop before this one, such as an inference pass: in no table here)"
        if dropped >= DROPPED_SHARE * total and isinstance(dropped_steps, int) else ""
    )
    return (
        f"the run took {total / 1e3:.3g} s; the profiled steps {steps / 1e3:.3g} s "
        f"({100 * steps / total:.0f}%), before them {before / 1e3:.3g} s (start-up: imports, "
        "data, model, and the warm-up steps"
        + (f"; torch.compile compiling {compiled / 1e3:.3g} s of it" if compiled >= 1.0 else "")
        + cut + f"), after them {after / 1e3:.3g} s"
    )

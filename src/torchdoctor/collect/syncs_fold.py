"""Keep the sync audit's memory bounded on long runs: fold per-step events together.

The audit counts events per (file, line, function, kind, phase, step). Over a run of a million
steps that is a million keys per sync line; but reports only need the counts over the profiled
steps ``[first_step, first_step + steps)``. :func:`fold_steps` merges the events of the steps
``first_step .. before - 1`` into step ``first_step``, so those counts are unchanged and the
number of keys stays proportional to the distinct sync lines, not to the steps.

Example:
    >>> events = {("f.py", 3, "g", "item", "forward", s): [1, 0.0] for s in range(5)}
    >>> folded = fold_steps(events, first_step=1, before=4)
    >>> sorted((k[5], v[0]) for k, v in folded.items())
    [(0, 1), (1, 3), (4, 1)]
"""

from __future__ import annotations

from typing import Any

#: the audit folds when it holds more keys than this (then at twice what remains)
FOLD_AT = 4096


def fold_steps(
    events: dict[tuple, list], *, first_step: int, before: int, keep: frozenset[int] = frozenset()
) -> dict[tuple, list]:
    """A copy of ``events`` with steps ``first_step .. before - 1`` merged into ``first_step``
    (counts and stall times added), but for the steps in ``keep`` (the long ones, which the
    sync table counts apart); other steps (warm-up, the running one, -1, -2) unchanged.

    Example:
        >>> events = {("f.py", 3, "g", "item", "forward", s): [1, 0.5] for s in range(4)}
        >>> fold_steps(events, first_step=0, before=3)
        {('f.py', 3, 'g', 'item', 'forward', 0): [3, 1.5], ('f.py', 3, 'g', 'item', 'forward', 3): [1, 0.5]}
        >>> sorted(k[5] for k in fold_steps(events, first_step=0, before=3, keep=frozenset({1})))
        [0, 1, 3]
    """
    out: dict[tuple, list] = {}
    for key, (count, stall) in events.items():
        step = key[5]
        if first_step <= step < before and step not in keep:
            key = (*key[:5], first_step, *key[6:])
        entry = out.get(key)
        if entry is None:
            out[key] = [count, stall]
        else:
            entry[0] += count
            entry[1] += stall
    return out


def fold_running_steps(audit: Any, profiler: Any, step: int) -> None:
    """Fold the audit's events of the profiled steps before ``step`` (the running one) when it
    holds more than its threshold of keys; raise the threshold to twice what is left.

    Example:
        >>> class Audit:
        ...     _events = {("f.py", 3, "g", "item", "forward", s): [1, 0.0] for s in range(6)}
        >>> class Profiler:
        ...     warmup = 1
        >>> audit = Audit()
        >>> fold_running_steps(audit, Profiler(), step=5)
        >>> sorted(k[5] for k in audit._events), audit._fold_at
        ([0, 1, 5], 4096)
    """
    first = int(getattr(profiler, "warmup", 0) or 0)
    state = getattr(profiler, "state", None)
    summarized = getattr(getattr(state, "summaries", None), "count", None)
    # (only steps already summarized: a step is summarized after it ends, on the step queue,
    # and whether it was long is known only then)
    before = step if summarized is None else min(step, first + summarized)
    if before > first:
        audit._events = fold_steps(
            audit._events, first_step=first, before=before, keep=long_steps(profiler, first)
        )
    audit._fold_at = max(FOLD_AT, 2 * len(audit._events))


def long_steps(profiler: Any, first_step: int) -> frozenset[int]:
    """The audit's numbers of the long steps so far that it saw (``collect/assemble.py``'s
    ``outliers``: periodic work, an evaluation, a stall): folded into the first step, their
    syncs would count as a typical step's.

    Example:
        >>> long_steps(object(), 1)
        frozenset()
    """
    state = getattr(profiler, "state", None)
    if state is None:
        return frozenset()
    from torchdoctor.collect.long_steps import outliers

    store = state.summaries
    found = outliers(list(store), state.detailed_summaries(), store.unkept_long(), store.count)
    long = found.get("audited_long_steps") or found.get("outlier_steps", ())
    return frozenset(int(k) + first_step for k in long)


def events_since(audit: Any, first_step: int) -> int:
    """How many sync events the audit counted in steps ``first_step`` and later (the live
    view's syncs per step).

    Example:
        >>> class Audit:
        ...     _events = {("f.py", 3, "g", "item", "forward", s): [2, 0.0] for s in range(3)}
        >>> events_since(Audit(), 1)
        4
    """
    return sum(v[0] for k, v in list(audit._events.items()) if k[5] >= first_step)


def drop_profiled_steps(audits: Any, running: int, number: int) -> None:
    """Forget each audit's events of the profiled steps before step ``running`` and give the
    running step's the step number ``number``: the profiler dropped the steps before it when
    it revised its step boundary, and numbers steps anew from there (a reinforce loop's first
    episode was cut at each policy call until its optimizer step showed).

    Example:
        >>> class Audit:
        ...     _events = {("f.py", 3, "g", "item", "forward", s): [1, 0.0] for s in (-1, 0, 4)}
        >>> audit = Audit(); drop_profiled_steps([audit], running=4, number=1)
        >>> [k[5] for k in audit._events]
        [-1, 1]
    """
    for audit in audits:
        audit._events = {
            (k if k[5] != running else (*k[:5], number, *k[6:])): v
            for k, v in audit._events.items()
            if k[5] < 0 or k[5] >= running
        }

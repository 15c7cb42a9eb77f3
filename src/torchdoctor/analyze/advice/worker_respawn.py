"""Rule ``worker-respawn``: a DataLoader without persistent workers starts its worker processes
again at every epoch, and the epoch's first batches wait for them. Measured from the run.

The profiler notes the step that fetched each new iterator's first batch
(``environment.data_loaders[i].starts``, kept steps' indices; ``collect/profiler_state.py``).
The steps that began an epoch whose workers were started anew (every iterator but the first,
which persistent workers start as well), and the step after each (the workers' first batches
are fetched one after the other), are compared with the other steps' data phase: their excess
is what restarting the workers cost. Spread over the steps, it is the saving of
``persistent_workers=True``: measured, not stated.

A loader iterated once per N steps (an evaluation's) restarts its workers each time it is
iterated too; its steps are the same kind of evidence.

Example:
    >>> steps = [{"index": i, "wall_ms": 100.0, "phases": {"data": 80.0 if i % 8 == 0 else 2.0}}
    ...          for i in range(32)]
    >>> loader = {"num_workers": 2, "persistent_workers": False, "iterators": 5,
    ...           "starts": [0, 8, 16, 24]}
    >>> session = {"steps": steps, "step_ms": {"median": 100.0},
    ...            "environment": {"data_loaders": [loader]}}
    >>> (advice,) = worker_respawn(session)
    >>> advice.estimated_saving_ms, advice.rule
    (9.75, 'worker-respawn')
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, pct
from torchdoctor.session_read import step_count, tree_step_ms

#: steps from an epoch's first on that wait for the new workers (their first batches)
WINDOW = 2
#: the excess must reach this share of the step to be advised (a restart in a step of seconds
#: is noise)
MIN_SHARE = 0.01
#: steps outside the epochs' first ones needed for the baseline data phase
MIN_BASELINE = 3


def respawn_cost(session: Mapping[str, Any], loader: Mapping[str, Any]) -> dict[str, Any] | None:
    """What restarting ``loader``'s workers cost the run, measured (None when it cannot be:
    persistent or no workers, no restart in the listed steps, too few other steps).

    ``ms_per_step``: the excess data time of the restarts' steps over the other steps' median,
    per step (the restarts per step times the mean excess per restart); ``per_restart_ms``,
    ``restarts`` (in all the kept steps) and ``measured`` (those in the listed steps),
    ``baseline_ms``.

    Example:
        >>> steps = [{"index": i, "phases": {"data": 50.0 if i in (4, 5) else 1.0}}
        ...          for i in range(10)]
        >>> loader = {"num_workers": 2, "iterators": 2, "starts": [0, 4]}
        >>> respawn_cost({"steps": steps}, loader)["per_restart_ms"]
        98.0
    """
    if not loader.get("num_workers") or loader.get("persistent_workers"):
        return None
    starts = sorted({int(s) for s in loader.get("starts") or () if isinstance(s, int) and s >= 0})
    # the first iterator's workers start once with persistent workers too: not a restart,
    # unless it began before the kept steps (the warm-up), which leaves all of these restarts
    restarts = starts if int(loader.get("iterators") or 0) > len(starts) else starts[1:]
    data = {
        step["index"]: float((step.get("phases") or {}).get("data") or 0.0)
        for step in session.get("steps") or ()
        if isinstance(step, Mapping) and isinstance(step.get("index"), int)
    }
    waiting = {s + k for s in restarts for k in range(WINDOW)}
    others = [ms for index, ms in data.items() if index not in waiting and index not in starts]
    measured = [s for s in restarts if s in data]
    if not measured or len(others) < MIN_BASELINE:
        return None
    baseline = statistics.median(others)
    excess = [
        sum(max(0.0, data[s + k] - baseline) for k in range(WINDOW) if s + k in data)
        for s in measured
    ]
    per_restart = sum(excess) / len(excess)
    steps = max(step_count(session), 1)
    return {
        "restart_steps": measured,
        "ms_per_step": per_restart * len(restarts) / steps,
        "per_restart_ms": per_restart,
        "restarts": len(restarts),
        "measured": len(measured),
        "baseline_ms": baseline,
        "steps": steps,
    }


def worker_respawn(session: Mapping[str, Any]) -> list[Advice]:
    """One advice per loader whose workers' restarts cost at least :data:`MIN_SHARE` of the
    step, with the measured saving of persistent workers.

    Example:
        >>> worker_respawn({"environment": {"data_loaders": [{"num_workers": 0}]}})
        []
    """
    step = tree_step_ms(session)
    loaders: Sequence[Mapping[str, Any]] = (
        (session.get("environment") or {}).get("data_loaders") or ()
    )
    advice: list[Advice] = []
    waited: list[tuple[set[int], Advice]] = []  # (the steps whose wait an advice measured, it)
    # (the loader that fed the most steps first: the training loader's advice takes the steps
    # an evaluation loader started in as well)
    for loader in sorted(loaders, key=lambda entry: -int(entry.get("steps") or 0)):
        cost = respawn_cost(session, loader)
        if cost is None or step <= 0 or cost["ms_per_step"] < MIN_SHARE * step:
            continue
        site = loader.get("site") or {}
        named = f"{site['file'].rsplit('/', 1)[-1]}:{site['line']}" if site.get("line") else ""
        where = f" ({named})" if named else ""
        saving = cost["ms_per_step"]
        window = {s + k for s in cost["restart_steps"] for k in range(WINDOW)}
        shared = next((item for steps, item in waited if window <= steps), None)
        if shared is not None:  # (its restarts fall in steps an earlier loader's advice
            # measured: one wait, not another saving; said there, with this loader named)
            shared.evidence.append(
                f"the DataLoader at {named or 'another line'} ({loader['num_workers']} workers, "
                "persistent_workers off) starts its workers in the same steps: their wait is in "
                "the excess above, measured once; give it persistent_workers=True too"
            )
            continue
        advice.append(Advice(
            rule="worker-respawn",
            title=f"The DataLoader's {loader['num_workers']} workers start again at every epoch"
            f"{where}: {fmt_ms(saving)} per step waiting for them",
            estimated_saving_ms=saving,
            estimated_saving_pct=pct(saving, step),
            confidence="high" if cost["measured"] >= 3 else "medium",
            evidence=[
                f"{cost['restarts']} epochs began with new worker processes in "
                f"{cost['steps']:,} steps; their first {WINDOW} steps waited "
                f"{fmt_ms(cost['per_restart_ms'])} more for data than the other steps (data "
                f"phase median {fmt_ms(cost['baseline_ms'])}; {cost['measured']} measured)",
                "persistent_workers is off: each new iterator (each epoch) starts the worker "
                "processes, which import the script's modules and rebuild the dataset, and "
                "the old ones are shut down",
            ],
            fix="Keep the workers between epochs: DataLoader(..., num_workers=N, "
            "persistent_workers=True); a DataLoader built inside the epoch loop: build it once "
            "before the loop. The saving is measured: what the epochs' first steps waited "
            "over the others.",
            references=["torch.utils.data.DataLoader(persistent_workers=True)", "TD403"],
            code="loader = DataLoader(dataset, batch_size=..., num_workers=4,\n"
            "                    persistent_workers=True)",
            heat=min(1.0, saving / step),
            cause="dataloader-workers",
        ))
        waited.append((window, advice[-1]))
    return advice

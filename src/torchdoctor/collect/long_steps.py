"""The long steps of a run: those the tree leaves out for their length (an evaluation, a
checkpoint, a stall), how often such steps come over the whole run, which of them the sync
audit saw, and the split of the left-out steps into long and busy ones.

Example:
    >>> steps = [{"index": k, "wall_ms": 400.0 if k == 9 else 10.0} for k in range(30)]
    >>> outliers(steps, steps)["outlier_steps"]
    [9]
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from torchdoctor.collect.assemble import (
    BUSY_SHARE,
    long_limit,
    own_ms,
    typical_steps,
    waited_share,
)


def outliers(
    steps: list[dict[str, Any]],
    detailed: list[dict[str, Any]],
    unkept: Sequence[dict[str, Any]] = (),
    count: int | None = None,
) -> dict[str, Any]:
    """The detailed steps the tree left out for their length (over TREE_OUTLIER x the median
    detailed step: an evaluation, a checkpoint), how often such steps come over the whole
    run, light steps included, and the long steps the sync audit saw, light ones included
    (``detailed``: every detailed step, ``steps``: every kept step; see :func:`sync_outliers`).
    A long run keeps a sample of its steps: ``unkept``, the long light steps it left out
    (``StepStore.unkept_long``), count among its ``count`` steps (an evaluation every 300 of
    3,000 steps with 3 of its 9 kept read its reads at the sample's rate: 1.59 a step, not 1.33).

    Example:
        >>> steps = [{"index": 0, "wall_ms": 2800.0}] + [{"index": k, "wall_ms": 15.0}
        ...                                              for k in range(1, 299)]
        >>> outliers(steps, steps[:15])
        {'outlier_steps': [0], 'outlier_rate': 0.0033444816053511705, 'audited_long_steps': [0]}
        >>> stalled = steps + [{"index": 299, "wall_ms": 90.0}]  # a stalled light step, audited
        >>> outliers(stalled, steps[:15])["audited_long_steps"]
        [0, 299]
        >>> calls = [{**s, "model_calls": 301 if s["index"] == 0 else 1, "audited": s["index"]
        ...           < 15} for s in stalled]  # (unaudited: a stall, one call, is no evaluation)
        >>> outliers(calls, calls[:15])["outlier_rate"] == 1 / 300
        True
        >>> rollouts = [{"index": k, "wall_ms": 7.4, "detailed": True, "audited": True}
        ...             for k in range(10)] + [{"index": k, "detailed": False, "audited": False,
        ...             "wall_ms": 15.0 if k % 10 == 9 else 3.7} for k in range(10, 200)]
        >>> rollouts[9]["wall_ms"] = 40.0  # (the one detailed rollout; light ones 15 ms: 4x)
        >>> outliers(rollouts, rollouts[:10])["outlier_rate"]  # (not 1 in 200: 1 in 10)
        0.1
    """
    _, stalls = typical_steps(detailed, [own_ms(s) for s in steps])
    if not steps or not detailed:
        return {}
    limit = long_limit(detailed)
    long = [s for s in stalls if own_ms(s) > limit]  # (not those cut at the detail budget)
    # light steps are long against the light steps (the hooks make a detailed step of small
    # calls 2x a light one: minimalRL's DQN rollouts of 8-22 ms among 3.7 ms light steps
    # never passed 3x the 7.4 ms detailed median, and its rollouts' reads counted 1 in 280)
    light = [s for s in steps if not s.get("detailed", True)]
    light_limit = long_limit(light) if len(light) >= 5 else limit
    every = [s for s in [*steps, *unkept]
             if own_ms(s) > (light_limit if s.get("detailed") is False else limit)]  # fmt: skip
    # a loop of model calls is periodic work though short (DQN's first episodes, 10 policy
    # calls, ~1 ms: their reads counted only in the long ones, 2.13 a step stated, ~5.2 true)
    counted = sorted(int(s["model_calls"]) for s in steps if s.get("model_calls") is not None)
    typical = counted[len(counted) // 2] if counted else None
    many = LOOP_CALLS * max(1, typical or 0)
    listed = {id(s) for s in every}
    loops = [s for s in steps if typical is not None and int(s.get("model_calls") or 0) >= many
             and id(s) not in listed]  # fmt: skip
    if not long and not any(s.get("audited", True) for s in loops):
        return {}
    every += loops
    seen = [s for s in every if s.get("audited", True)] or long
    # a long step the audit did not see stands for one it saw when it called the model as
    # those did (more calls than a typical step, an evaluation's, or as many: a checkpoint's),
    # or when its calls were not counted; a stall with a typical step's one call is no
    # evaluation with 300 reads
    unseen = [s for s in every if not s.get("audited", True)]
    kinds = {_calls_more(s, typical) for s in seen}
    alike = [s for s in unseen if _calls_more(s, typical) in kinds | {None}]
    return {
        "outlier_steps": sorted(int(s.get("index", 0)) for s in long),
        "outlier_rate": max(_weighted(seen, alike), len(long)) / max(len(steps), count or 0),
        "audited_long_steps": sorted({int(s.get("index", 0)) for s in [*seen, *long]}),
    }


#: a step calling the model this many times the median step's runs a loop of model calls
LOOP_CALLS = 4


def _weighted(seen: list[Mapping[str, Any]], alike: list[Mapping[str, Any]]) -> float:
    """How many of the audited long steps (``seen``) the run's long steps are worth: their
    count, weighted by model calls when every one counted them (a loop's syncs come per call:
    minimalRL's DQN episodes grew from 10 to 190 policy calls, each reading `.item()` once,
    and the audit saw 6 early ones, 28 reads each, against 52 on average). A long step the
    sample left out (``unkept``) counts at the kept ones' mean.

    Example:
        >>> seen = [{"model_calls": 30}]
        >>> _weighted(seen, [{"model_calls": 90}, {"model_calls": 30}]), _weighted(seen, [{}])
        (5.0, 2.0)
    """
    calls = [int(s["model_calls"]) for s in [*seen, *alike] if s.get("model_calls") is not None]
    seen_calls = [int(s.get("model_calls") or 0) for s in seen]
    unkept = [s for s in alike if s.get("unkept")]
    if len(calls) + len(unkept) < len(seen) + len(alike) or not all(seen_calls):
        return float(len(seen) + len(alike))
    mean = sum(calls) / len(calls)
    return len(seen) * (sum(calls) + mean * len(unkept)) / sum(seen_calls)


def _calls_more(step: Mapping[str, Any], typical: int | None) -> bool | None:
    """Whether ``step`` called the model more often than the median step did (``typical``;
    None when the steps do not count their calls)."""
    if step.get("model_calls") is None or typical is None:
        return None
    return int(step["model_calls"]) > typical


def long_and_busy(
    stalls: Sequence[dict[str, Any]], outlier_steps: Collection[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The steps :func:`typical_steps` left out, split: ``(long, busy)``. A step long for its
    own work (in ``outlier_steps``, :func:`outliers`) is long though it waited for a core too;
    a step that only waited is busy (an evaluation of 120 calls that waited 48% of its time on
    a loaded host was read as busy, and its calls averaged over 8 busy steps: 15 a step).

    Example:
        >>> evaluation = {"index": 70, "wall_ms": 182.0, "cpu_wait_ms": 87.5}
        >>> waited = {"index": 52, "wall_ms": 8.6, "cpu_wait_ms": 4.9}
        >>> [[s["index"] for s in part] for part in long_and_busy([evaluation, waited], [70])]
        [[70], [52]]
    """
    busy = [
        s
        for s in stalls
        if int(s.get("index", 0)) not in outlier_steps and waited_share(s) > BUSY_SHARE
    ]
    return [s for s in stalls if not any(s is b for b in busy)], busy


def sync_outliers(session: Mapping[str, Any], warmup: int) -> dict[str, Any]:
    """The sync audit's ``outlier_steps`` and ``outlier_rate`` (``group_records``: a sync in a
    step of periodic work counts at the rate such steps come, not per audited step) from the
    session's ``config.detail`` (audit steps count the warm-up ones too). The outlier steps are
    every long step the audit saw, light ones too: a stalled light step it saw with none of an
    evaluation's syncs tells that not every long step holds them (a CI run's stall doubled an
    evaluation's 300 reads per step when only the detailed long steps were counted).

    Example:
        >>> detail = {"outlier_steps": [0], "outlier_rate": 0.01, "audited_long_steps": [0, 7]}
        >>> found = sync_outliers({"config": {"detail": detail}}, 1)
        >>> sorted(found["outlier_steps"]), found["outlier_rate"]
        ([1, 8], 0.01)
        >>> sync_outliers({"config": {}}, 1)
        {}
    """
    detail = (session.get("config") or {}).get("detail") or {}
    if not detail.get("outlier_steps") and not detail.get("audited_long_steps"):
        return {}  # (a loop of model calls audited is one too, though not long: DQN's episodes)
    seen = detail.get("audited_long_steps") or detail["outlier_steps"]
    return {
        "outlier_steps": {int(k) + warmup for k in seen},
        "outlier_rate": float(detail["outlier_rate"]),
    }

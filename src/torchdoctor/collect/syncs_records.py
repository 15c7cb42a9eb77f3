"""Group a sync audit's events into SyncRecords (docs/session-schema.md): one per line and kind.

Example:
    >>> events = {("t.py", 3, "step", "item", "other", 0, None): [2, 0.0]}
    >>> [(r["kind"], r["per_step"]) for r in group_records(events, True, num_steps=2)]
    [('item', 1.0)]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from torchdoctor.collect.source_lines import hands_to_step
from torchdoctor.collect.syncs_frames import own_line, source_text


def group_records(
    events: Mapping[tuple, list],
    predict: bool,
    first_step: int = 0,
    num_steps: int | None = None,
    audited_steps: int | None = None,
    outlier_steps: Collection[int] = (),
    outlier_rate: float = 0.0,
) -> list[dict[str, Any]]:
    """SyncRecords grouped by (file, line, kind, user line), most frequent first.

    ``events``: ``(file, line, function, kind, phase, step, user line, torch function) ->
    [count, stall ms]`` (the last two None when the sync was the user's own code's; older
    keys without the torch function are read too)
    (``step`` -1 without a profiler). Only steps ``first_step .. first_step + num_steps - 1``
    count and ``per_step = count / audited_steps`` (by default ``num_steps``, itself by default
    the steps seen from ``first_step`` on); without a profiler the whole audit is one step.
    ``predict``: a CPU run, where the stall is not measured (``stall_ms`` None).
    ``outlier_steps``: the long steps the audit saw (over TREE_OUTLIER x the median detailed
    step; periodic work: an evaluation, a checkpoint; ``long_steps.sync_outliers``), and long
    steps come ``outlier_rate`` times per step over the whole run:
    a sync in them counts per such step times that rate, not per audited step (minGPT's adder
    evaluates in its first step, 100 ``.cpu()`` reads there, none in the other 298 steps: 0.33 per
    step, not 6.7 per audited step); the record says ``in_outlier_steps`` (how many).

    Example:
        >>> group_records({}, True)
        []
        >>> events = {("t.py", 3, "ev", "cpu", "other", 1, None): [100, 0.0],
        ...           ("t.py", 9, "step", "item", "other", 2, None): [1, 0.0]}
        >>> [(r["line"], round(r["per_step"], 2), r.get("in_outlier_steps")) for r in
        ...  group_records(events, True, 1, 300, 15, outlier_steps={1}, outlier_rate=1 / 300)]
        [(3, 0.33, 1), (9, 0.07, None)]
        >>> every = {("t.py", 9, "step", "item", "other", k, None): [1, 0.0] for k in range(1, 16)}
        >>> [r["per_step"] for r in group_records(every, True, 1, 300, 15, outlier_steps={1},
        ...                                       outlier_rate=1 / 300)]  # every step: once a step
        [1.0]
    """
    stepped = any(key[5] != -1 for key in events)
    if stepped:
        if num_steps is None:
            last = max(key[5] for key in events)
            num_steps = max(1, last - first_step + 1)
        lo, hi = first_step, first_step + num_steps
        chosen = [(k, v) for k, v in events.items() if lo <= k[5] < hi]
    else:
        num_steps = num_steps or 1
        chosen = list(events.items())
    groups: dict[tuple, dict[str, Any]] = {}
    for (file, line, function, kind, phase, _step, own, *more), (count, stall) in chosen:
        inside = more[0] if more else None  # the torch function that made it (torch_site)
        group = groups.setdefault(
            (file, line, kind, own, inside),
            {"function": function, "count": 0, "stall": 0.0, "phases": Counter(), "steps": set(),
             "rare": 0.0, "rare_stall": 0.0},
        )
        if _step >= 0:
            group["steps"].add(_step)
        if _step in outlier_steps:  # (counted apart: see the docstring)
            group["rare"] += count
            group["rare_stall"] += stall
        else:
            group["count"] += count
            group["stall"] += stall
        group["phases"][phase] += count
    per = audited_steps or num_steps
    # a typical step's syncs count for the typical share of the run's steps, an outlier step's
    # for the outliers' share (a line syncing in every step, outliers too: exactly its rate)
    rate = min(1.0, outlier_rate) if outlier_steps else 0.0
    typical = max(1, per - len(outlier_steps)) / (1.0 - rate) if rate < 1.0 else float("inf")
    rare_per = max(1, len(outlier_steps)) / rate if rate > 0.0 else 1.0
    covered = {(f, ln) for (f, ln, k, *_) in groups if k != "cuda_sync_warning"}
    out = []
    for (file, line, kind, own, inside), group in groups.items():
        if kind == "cuda_sync_warning" and (file, line) in covered:
            continue  # the warning confirms a sync already recorded on that line
        out.append(
            {
                "kind": kind,
                "op": source_text(file, line, kind),
                "file": file,
                "line": line,
                "function": group["function"],
                "count": group["count"] + int(group["rare"]),
                "per_step": group["count"] / typical + group["rare"] / rare_per,
                "phase": group["phases"].most_common(1)[0][0],
                "stall_ms": None
                if predict
                else group["stall"] / typical + group["rare_stall"] / rare_per,
                "would_sync_on_cuda": True,
                # the audited steps it synced in (an evaluation: many syncs in one step)
                **({"steps": len(group["steps"])} if stepped and group["steps"] else {}),
                **({"in_outlier_steps": len(group["steps"] & set(outlier_steps)),
                    "typical_per_step": group["count"] / typical}  # (its typical steps' own)
                   if group["rare"] else {}),  # fmt: skip
                **(own_line(file, own) if own else {}),
                # (an action handed to env.step: the host needs it; its source says so when
                # the op text, cut to a width, does not: y_rl_dqn's `a = ... .argmax().item()`)
                **({"action": True} if hands_to_step(file, line) else {}),
                **({"inside": inside} if inside else {}),
            }
        )
    out.sort(key=lambda r: (-r["count"], r["file"], r["line"], r["kind"]))
    return out

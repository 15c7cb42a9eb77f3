"""Rule ``cpu-work``: CPU-side computation inside a device step (seed 000, 002).

Evidence: a ``.cpu()`` / ``.numpy()`` / ``.tolist()`` round trip recorded by the sync audit, or
a module/region named after CPU libraries (scipy ``linear_sum_assignment``, numpy). The code
between the round trips runs on the host while the GPU idles. When the round trip lies inside
a measured module or region, the saving is Amdahl over that part with the stated speedup of an
on-device op; on CPU runs nothing moves, so the saving is left unknown.

Example:
    >>> cpu_work({"syncs": [], "tree": None})
    []
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    SPEEDUPS,
    Advice,
    fmt_ms,
    is_cuda,
    location,
    negligible_syncs,
    node_ms,
    pct,
    same_file,
    saving_step_ms,
    tree_step_ms,
    walk,
    with_saving,
)

ROUND_TRIP_KINDS = {"cpu", "numpy", "tolist"}
_CPU_NAMES = re.compile(r"scipy|numpy|linear_sum_assignment|\bcpu\b|_cpu", re.IGNORECASE)
MIN_FRACTION = 0.05


def _enclosing(tree: Mapping[str, Any] | None, record: Mapping[str, Any]) -> Mapping | None:
    """The smallest module/region node whose source span contains the record's line."""
    best = None
    for node, _ in walk(tree):
        source = node.get("source") or {}
        if node.get("kind") not in ("module", "region") or not source.get("line"):
            continue
        start = int(source["line"])
        end = int(source.get("end_line") or start)
        line = record.get("line")
        if (
            isinstance(line, int)
            and start <= line <= end
            and same_file(source.get("file"), record.get("file"))
            and (best is None or node_ms(node) < node_ms(best))
        ):
            best = node
    return best


def _periodic(record: Mapping[str, Any]) -> bool:
    """The line synced in fewer than half of the audited steps (the audit saw 3 or more):
    periodic work (a sample image saved every N steps), not the step's own.

    Example:
        >>> _periodic({"count": 2, "per_step": 1 / 3, "steps": 1}), _periodic({"count": 6,
        ...     "per_step": 1.0, "steps": 6})
        (True, False)
    """
    count, per_step, steps = record.get("count"), record.get("per_step"), record.get("steps")
    if not all(isinstance(v, (int, float)) and v > 0 for v in (count, per_step, steps)):
        return False
    audited = round(float(count) / float(per_step))  # type: ignore[arg-type]
    return audited >= 3 and 2 * float(steps) < audited  # type: ignore[arg-type]


def cpu_work(session: Mapping[str, Any]) -> list[Advice]:
    """Advice for each module/region doing host-side work inside the step.

    Example:
        >>> node = {"kind": "region", "path": "match", "name": "linear_sum_assignment",
        ...         "total_ms": {"median": 5.0}, "children": []}
        >>> s = {"tree": {"kind": "root", "children": [node]}, "step_ms": {"median": 10.0},
        ...      "environment": {"device": "cuda:0"}, "syncs": []}
        >>> cpu_work(s)[0].rule
        'cpu-work'
    """
    step = tree_step_ms(session)
    unprofiled = saving_step_ms(session)  # (savings are of the step without the profiler)
    tree = session.get("tree")
    cuda = is_cuda(session)
    places: dict[int, tuple[Mapping | None, list[str]]] = {}
    loose: list[str] = []
    lines: dict[int, list[str]] = {}  # node id (0: loose) -> file:line of its round trips
    loose_syncs, measured = 0.0, False  # the loose round trips per step; a stall measured
    for record in session.get("syncs") or ():
        if record.get("kind") not in ROUND_TRIP_KINDS:
            continue
        where = f"{os.path.basename(str(record.get('file') or '?'))}:{record.get('line', '?')}"
        text = f"{where} {record.get('op') or record.get('kind')} (device-to-host round trip)"
        node = _enclosing(tree, record)
        if node is None and _periodic(record):
            continue  # (an image saved every 100 steps: not a round trip of the step)
        lines.setdefault(id(node) if node is not None else 0, []).append(
            location(record.get("file"), record.get("line"))
        )
        if node is None:
            loose.append(text)
            per_step = record.get("per_step")
            loose_syncs += float(per_step) if isinstance(per_step, int | float) else 1.0
            measured |= isinstance(record.get("stall_ms"), int | float)
        else:
            places.setdefault(id(node), (node, []))[1].append(text)
    for node, _ in walk(tree):
        if node.get("kind") in ("module", "region") and _CPU_NAMES.search(
            f"{node.get('name') or ''} {node.get('type') or ''}"
        ):
            places.setdefault(id(node), (node, []))[1].append(
                f"{node.get('path') or node.get('name')} is named after a CPU library"
            )
    advice = []
    for node, evidence in places.values():
        part = node_ms(node)
        if step <= 0 or part < MIN_FRACTION * step:
            loose.extend(evidence)
            lines.setdefault(0, []).extend(lines.pop(id(node), []))
            continue
        path = node.get("path") or node.get("name")
        item = Advice(
            rule="cpu-work",
            title=f"Move {path} onto the device: it runs on the host inside the step",
            confidence="medium" if cuda else "low",
            evidence=[f"{path} takes {fmt_ms(part)} ({pct(part, step):.0f}% of the step)"]
            + evidence,
            fix="Use an on-device equivalent (torchdoctor.ops.linear_assignment / Sinkhorn "
            "instead of scipy linear_sum_assignment; torch ops instead of numpy) and keep "
            "tensors on the device end to end.",
            references=["torchdoctor.ops", "seed 000", "seed 002"],
            locations=lines.get(id(node), []),
        )
        if cuda:
            with_saving(item, unprofiled, part / step, SPEEDUPS["on_device"])
        else:
            item.evidence.append(
                "CPU run: nothing moves here; on CUDA this is host work between device syncs"
            )
            item.heat = min(1.0, part / step)
        advice.append(item)
    only_syncs = len(loose) == sum(text.endswith("round trip)") for text in loose)
    if loose and not (only_syncs and not measured and negligible_syncs(loose_syncs, step)):
        advice.append(
            Advice(
                rule="cpu-work",
                title="Device-to-host round trips in the step: keep the data on the device",
                confidence="low",
                evidence=loose[:5] + ([f"... and {len(loose) - 5} more"] if len(loose) > 5 else []),
                fix="Replace .cpu()/.numpy()/.tolist() processing with tensor ops on the device.",
                references=["torchdoctor.ops", "seed 002"],
                heat=0.05,
                locations=lines.get(0, []),
            )
        )
    return advice

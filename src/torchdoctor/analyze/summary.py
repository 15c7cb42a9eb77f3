"""A session in a few numbers: what trackers, the run history and the CI gate record.

:func:`summary_metrics` flattens a session into ``name -> float``: the median step time and
its quartiles (``step_ms``, ``step_ms_q1``, ``step_ms_q3``), each phase's share of the step, host syncs per step, and the share of the step
spent in the modules with the most self time (a module's own forward + backward, children
excluded, so a wrapper around the whole model does not hide the layer that costs).
:func:`top_modules` is that ranking. Pure functions: no I/O.

Example:
    >>> s = {"step_ms": {"median": 10.0, "q1": 9.0, "q3": 11.0},
    ...      "phases": {"forward": {"median": 4.0}, "backward": {"median": 6.0}},
    ...      "steps": [{}, {}], "syncs": [{"per_step": 2.0}], "tree": None}
    >>> m = summary_metrics(s)
    >>> m["torchdoctor/step_ms"], m["torchdoctor/phase_pct/backward"], m["torchdoctor/syncs_per_step"]
    (10.0, 60.0, 2.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.session_read import center, step_ms, walk

PREFIX = "torchdoctor/"


def self_ms(node: Mapping[str, Any]) -> float:
    """A node's own time per step: forward self + backward self (children excluded).

    Example:
        >>> self_ms({"forward_self_ms": {"median": 1.0}, "backward_self_ms": {"median": 2.0}})
        3.0
    """
    return center(node.get("forward_self_ms")) + center(node.get("backward_self_ms"))


def top_modules(session: Mapping[str, Any], count: int = 5) -> list[tuple[str, float]]:
    """``(path, share of the step in %)`` of the modules and regions with most self time.

    Example:
        >>> leaf = lambda p, ms: {"path": p, "kind": "module", "forward_self_ms": {"median": ms}}
        >>> s = {"step_ms": {"median": 10.0}, "tree": {"path": "", "kind": "root",
        ...      "children": [leaf("a", 2.0), leaf("b", 5.0)]}}
        >>> top_modules(s)
        [('b', 50.0), ('a', 20.0)]
    """
    step = step_ms(session)
    rows = [
        (str(node["path"]), self_ms(node))
        for node, _ in walk(session.get("tree"))
        if node.get("kind") in ("module", "region") and node.get("path")
    ]
    rows = [(path, ms) for path, ms in rows if ms > 0]
    rows.sort(key=lambda row: row[1], reverse=True)
    return [(path, 100.0 * ms / step if step > 0 else 0.0) for path, ms in rows[:count]]


def syncs_per_step(session: Mapping[str, Any]) -> float:
    """Host-device syncs per step, summed over the session's sync records.

    Example:
        >>> syncs_per_step({"syncs": [{"per_step": 1.0}, {"per_step": 0.5}]})
        1.5
    """
    return sum(float(r.get("per_step") or 0.0) for r in session.get("syncs") or ())


def summary_metrics(session: Mapping[str, Any], modules: int = 5) -> dict[str, float]:
    """Flat ``torchdoctor/...`` metrics of a session (see the module docstring).

    Example:
        >>> sorted(summary_metrics({"step_ms": {"median": 2.0}}))[:2]
        ['torchdoctor/step_ms', 'torchdoctor/steps']
    """
    stat = session.get("step_ms") or {}
    median = stat.get("median") if isinstance(stat, Mapping) else None
    metrics: dict[str, float] = {
        PREFIX + "step_ms": float(median) if median else step_ms(session),
        PREFIX + "steps": float(len(session.get("steps") or ())),
        PREFIX + "syncs_per_step": syncs_per_step(session),
    }
    for key in ("q1", "q3"):
        if isinstance(stat.get(key), (int, float)):
            metrics[PREFIX + f"step_ms_{key}"] = float(stat[key])
    phases = {name: center(value) for name, value in (session.get("phases") or {}).items()}
    total = sum(phases.values())
    for name, ms in phases.items():
        metrics[PREFIX + f"phase_pct/{name}"] = 100.0 * ms / total if total > 0 else 0.0
    for path, pct in top_modules(session, modules):
        metrics[PREFIX + f"module_pct/{path}"] = pct
    if isinstance(session.get("advice"), list):
        metrics[PREFIX + "advice"] = float(len(session["advice"]))
    return metrics

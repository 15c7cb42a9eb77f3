"""Compare two sessions as data: step, per-phase and per-module change; syncs removed and added.

Modules are matched by path (``self`` nodes and the root are skipped). Sync records are matched
by (file name, kind, source text), so a sync that only moved to another line after an edit
counts as kept; records without source text fall back to the line number. A positive
``delta_ms`` means the new session is slower.

Example:
    >>> old = {"step_ms": {"median": 10.0}, "phases": {}, "tree": None, "syncs": []}
    >>> new = {"step_ms": {"median": 5.0}, "phases": {}, "tree": None, "syncs": []}
    >>> diff_sessions(old, new)["step"]["speedup"]
    2.0
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.session_read import PHASES, center, node_ms, step_ms, walk


def _change(old: float | None, new: float | None) -> dict[str, Any]:
    old_v = float(old) if old is not None else None
    new_v = float(new) if new is not None else None
    delta = (new_v or 0.0) - (old_v or 0.0)
    return {
        "old_ms": old_v,
        "new_ms": new_v,
        "delta_ms": delta,
        "delta_pct": 100.0 * delta / old_v if old_v else None,
    }


def _modules(session: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        str(n.get("path")): n
        for n, _ in walk(session.get("tree"))
        if n.get("kind") in ("module", "region") and n.get("path")
    }


def sync_key(record: Mapping[str, Any]) -> tuple[str, str, str]:
    """How two sync records are matched across sessions.

    Example:
        >>> sync_key({"file": "/a/t.py", "kind": "item", "op": " loss.item() ", "line": 3})
        ('t.py', 'item', 'loss.item()')
    """
    op = str(record.get("op") or "").strip()
    where = op if op else f"line {record.get('line')}"
    return (os.path.basename(str(record.get("file") or "")), str(record.get("kind")), where)


def _per_step(records: list[Mapping[str, Any]]) -> float:
    return sum(float(r.get("per_step") or 0.0) for r in records)


def diff_sessions(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The difference between two sessions as plain data (see module docstring).

    Example:
        >>> rec = {"file": "t.py", "kind": "item", "op": "x.item()", "per_step": 1.0}
        >>> d = diff_sessions({"syncs": [rec]}, {"syncs": []})
        >>> len(d["syncs_removed"]), len(d["syncs_added"])
        (1, 0)
    """
    for name, session in (("old", old), ("new", new)):
        if not isinstance(session, Mapping):
            raise TypeError(
                f"diff_sessions: {name} must be a Session or its dict, got "
                f"{type(session).__name__}; load files with Session.load(path)"
            )
    old_step, new_step = step_ms(old), step_ms(new)
    step = _change(old_step, new_step)
    step["speedup"] = old_step / new_step if old_step > 0 and new_step > 0 else None
    phases = []
    old_phases, new_phases = old.get("phases") or {}, new.get("phases") or {}
    names = [p for p in PHASES if p in old_phases or p in new_phases]
    names += sorted((set(old_phases) | set(new_phases)) - set(PHASES))
    for phase in names:
        row = _change(center(old_phases.get(phase)), center(new_phases.get(phase)))
        phases.append({"phase": phase, **row})
    old_mod, new_mod = _modules(old), _modules(new)
    modules = []
    for path in list(old_mod) + [p for p in new_mod if p not in old_mod]:
        a, b = old_mod.get(path), new_mod.get(path)
        row = _change(node_ms(a) if a else None, node_ms(b) if b else None)
        row["status"] = "removed" if b is None else "added" if a is None else "changed"
        for key, part in (("forward", "forward_ms"), ("backward", "backward_ms")):
            row[key] = _change(
                center(a.get(part)) if a else None, center(b.get(part)) if b else None
            )
        modules.append({"path": path, **row})
    modules.sort(key=lambda r: abs(r["delta_ms"]), reverse=True)
    old_syncs = list(old.get("syncs") or ())
    new_syncs = list(new.get("syncs") or ())
    old_keys = {sync_key(r) for r in old_syncs}
    new_keys = {sync_key(r) for r in new_syncs}
    return {
        "old_label": old.get("label"),
        "new_label": new.get("label"),
        "step": step,
        "phases": phases,
        "modules": modules,
        "syncs_removed": [r for r in old_syncs if sync_key(r) not in new_keys],
        "syncs_added": [r for r in new_syncs if sync_key(r) not in old_keys],
        "syncs_kept": len(old_keys & new_keys),
        "syncs_per_step": {"old": _per_step(old_syncs), "new": _per_step(new_syncs)},
    }

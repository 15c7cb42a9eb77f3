"""Chrome trace / Perfetto JSON of a session's representative step (``session["timeline"]``).

Open the file in https://ui.perfetto.dev or chrome://tracing. Each timeline entry becomes a
complete ("X") event; categories get their own track (phases, forward, backward, regions),
named by metadata events, so nested modules stack by depth within a track.

Example:
    >>> import json
    >>> t = {"timeline": [{"name": "model", "cat": "forward", "ts_us": 0.0, "dur_us": 5.0,
    ...                    "depth": 1}], "label": "demo"}
    >>> [e["name"] for e in json.loads(render_trace(t))["traceEvents"] if e["ph"] == "X"]
    ['model']
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: category -> (track id, track name); unknown categories get tracks after these
TRACKS: dict[str, tuple[int, str]] = {
    "phase": (1, "phases"),
    "forward": (2, "forward (modules)"),
    "backward": (3, "backward (modules)"),
    "region": (4, "regions"),
}


def trace_events(session: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The trace events (metadata first, then one "X" event per timeline entry, by start time).

    Example:
        >>> trace_events({"timeline": []})[0]["ph"]
        'M'
    """
    pid = 1
    events: list[dict[str, Any]] = [
        {
            "name": "process_name",
            "ph": "M",
            "pid": pid,
            "tid": 0,
            "args": {"name": f"torchdoctor: {session.get('label') or 'session'}"},
        }
    ]
    tracks = dict(TRACKS)
    body = []
    for entry in session.get("timeline") or ():
        cat = str(entry.get("cat") or "other")
        if cat not in tracks:
            tracks[cat] = (len(tracks) + 1, cat)
        ts = float(entry.get("ts_us") or 0.0)
        dur = max(float(entry.get("dur_us") or 0.0), 0.0)
        body.append(
            {
                "name": str(entry.get("name") or "?"),
                "cat": cat,
                "ph": "X",
                "ts": ts,
                "dur": dur,
                "pid": pid,
                "tid": tracks[cat][0],
                "args": {"depth": entry.get("depth")},
            }
        )
    used = {e["tid"] for e in body}
    for tid, name in sorted(tracks.values()):
        if tid in used:
            events.append(
                {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
            )
            events.append(
                {
                    "name": "thread_sort_index",
                    "ph": "M",
                    "pid": pid,
                    "tid": tid,
                    "args": {"sort_index": tid},
                }
            )
    # parents before children at equal start times so viewers nest them correctly
    body.sort(key=lambda e: (e["tid"], e["ts"], -e["dur"]))
    return events + body


def render_trace(session: Mapping[str, Any]) -> str:
    """The Chrome trace JSON text (``{"traceEvents": [...], "displayTimeUnit": "ms"}``).

    Example:
        >>> import json
        >>> json.loads(render_trace({"timeline": []}))["displayTimeUnit"]
        'ms'
    """
    document = {
        "traceEvents": trace_events(session),
        "displayTimeUnit": "ms",
        "otherData": {
            "tool": session.get("tool"),
            "label": session.get("label"),
            "device": (session.get("environment") or {}).get("device"),
        },
    }
    return json.dumps(document, indent=None, allow_nan=False)

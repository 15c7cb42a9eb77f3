"""The run history: every ``torchdoctor run`` / ``torchdoctor.profile`` appends one row to SQLite.

Where it lives (first that applies): an explicit path (``--history PATH``, ``history=PATH``);
``TORCHDOCTOR_HISTORY=PATH`` (``off``, ``0`` or empty: no history); else
``$XDG_CACHE_HOME/torchdoctor/history.sqlite`` (``~/.cache/...`` without XDG_CACHE_HOME).

A row holds the date, script, arguments, git commit of the script's repository (if any),
device, step time (median, quartiles and every step's wall time), the top module by self
time, the advice count, and the session itself (compressed JSON without its timeline), so
``torchdoctor diff 3 7`` can compare two history entries in full. Recording never breaks the
run it records: a failure is one line on stderr.

Example:
    >>> import tempfile, os
    >>> from torchdoctor.session import Session
    >>> path = os.path.join(tempfile.mkdtemp(), "h.sqlite")
    >>> s = Session.new("demo", with_environment=False)
    >>> s["step_ms"] = {"median": 5.0, "q1": 4.0, "q3": 6.0}
    >>> run_id = record_run(s, script=None, args=[], kind="profile", path=path)
    >>> [(r["id"], r["step_ms"]) for r in list_runs(path)]
    [(1, 5.0)]
    >>> load_session(run_id, path)["label"]
    'demo'
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENV = "TORCHDOCTOR_HISTORY"
OFF = ("", "0", "off", "none", "false", "no")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT,
    script TEXT,
    args TEXT NOT NULL,
    git_commit TEXT,
    device TEXT,
    steps INTEGER NOT NULL,
    step_ms REAL,
    step_q1 REAL,
    step_q3 REAL,
    step_times TEXT NOT NULL,
    top_module TEXT,
    top_module_pct REAL,
    advice INTEGER,
    session BLOB
)
"""
COLUMNS = (
    "id", "created", "kind", "label", "script", "args", "git_commit", "device", "steps",
    "step_ms", "step_q1", "step_q3", "step_times", "top_module", "top_module_pct", "advice",
)  # fmt: skip


def history_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The history database to use, or ``None`` when history is switched off.

    Example:
        >>> str(history_path("/tmp/h.sqlite"))
        '/tmp/h.sqlite'
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "torchdoctor" / "history.sqlite"


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open (creating if needed) the history database at ``path``.

    Example:
        >>> import tempfile
        >>> with connect(Path(tempfile.mkdtemp()) / "h.sqlite") as db:
        ...     db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        0
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=10.0)
    connection.row_factory = sqlite3.Row
    connection.execute(_SCHEMA)
    return connection


def git_commit(script: str | os.PathLike[str] | None) -> str | None:
    """The commit checked out in the git repository holding ``script`` (None outside one).

    Example:
        >>> git_commit("/") is None
        True
    """
    if not script:
        return None
    folder = Path(script).resolve()
    folder = folder if folder.is_dir() else folder.parent
    if not folder.is_dir():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def _advice_count(session: Mapping[str, Any]) -> int | None:
    if isinstance(session.get("advice"), list) and session["advice"]:
        return len(session["advice"])
    try:
        from torchdoctor.analyze.advice import advice_dicts

        return len(advice_dicts(session.to_dict() if hasattr(session, "to_dict") else session))
    except Exception:  # advice is extra: a row without it is still a row
        return None


def summarize(
    session: Mapping[str, Any], *, script: str | None, args: Sequence[str], kind: str
) -> dict[str, Any]:
    """The history row of a session (everything but the id and the stored session).

    Example:
        >>> row = summarize({"step_ms": {"median": 3.0}, "steps": [{"wall_ms": 3.0}]},
        ...                 script=None, args=["--lr", "1"], kind="profile")
        >>> row["step_ms"], row["steps"], json.loads(row["args"])
        (3.0, 1, ['--lr', '1'])
    """
    from torchdoctor.analyze.summary import top_modules

    stat = session.get("step_ms") or {}
    steps = session.get("steps") or []
    top = top_modules(session, 1)
    config = session.get("config") or {}
    environment = session.get("environment") or {}
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "label": session.get("label"),
        "script": str(Path(script).resolve()) if script else None,
        "args": json.dumps([str(a) for a in args]),
        "git_commit": git_commit(script),
        "device": config.get("device") or environment.get("device"),
        "steps": len(steps),
        "step_ms": stat.get("median"),
        "step_q1": stat.get("q1"),
        "step_q3": stat.get("q3"),
        "step_times": json.dumps([float(s.get("wall_ms") or 0.0) for s in steps]),
        "top_module": top[0][0] if top else None,
        "top_module_pct": top[0][1] if top else None,
        "advice": _advice_count(session),
    }


def _pack(session: Mapping[str, Any]) -> bytes:
    data = session.to_dict() if hasattr(session, "to_dict") else dict(session)
    data = {key: value for key, value in data.items() if key != "timeline"}
    return zlib.compress(json.dumps(data, default=str).encode("utf-8"), 6)


def record_run(
    session: Mapping[str, Any],
    *,
    script: str | None,
    args: Sequence[str] = (),
    kind: str = "run",
    path: str | os.PathLike[str] | None = None,
) -> int | None:
    """Append the session's summary to the history; its id, or None (off, or it failed).

    Never raises: a history that cannot be written is reported on stderr and skipped.

    Example:
        >>> import tempfile
        >>> where = Path(tempfile.mkdtemp()) / "h.sqlite"
        >>> [record_run({"step_ms": {"median": 2.0}}, script=None, path=where) for _ in "ab"]
        [1, 2]
    """
    where = history_path(path)
    if where is None:
        return None
    try:
        row = summarize(session, script=script, args=args, kind=kind)
        row["session"] = _pack(session)
        with connect(where) as connection:
            cursor = connection.execute(
                f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
            return int(cursor.lastrowid)
    except Exception as exc:  # noqa: BLE001 - the run matters more than its history
        print(
            f"torchdoctor: run history not written to {where} ({type(exc).__name__}: {exc}); "
            f"choose another file with {ENV}=PATH or switch it off with {ENV}=off",
            file=sys.stderr,
        )
        return None


def _as_dict(row: sqlite3.Row) -> dict[str, Any]:
    data = {key: row[key] for key in COLUMNS}
    data["args"] = json.loads(data["args"] or "[]")
    data["step_times"] = json.loads(data["step_times"] or "[]")
    return data


def list_runs(
    path: str | os.PathLike[str] | None = None, script: str | None = None
) -> list[dict[str, Any]]:
    """Every recorded run, oldest first (only ``script``'s when given: a path or a file name).

    Example:
        >>> import tempfile
        >>> where = Path(tempfile.mkdtemp()) / "h.sqlite"
        >>> _ = record_run({"label": "a"}, script=None, kind="profile", path=where)
        >>> [(r["id"], r["kind"], r["label"]) for r in list_runs(where)]
        [(1, 'profile', 'a')]
    """
    where = history_path(path)
    if where is None or not where.exists():
        return []
    with connect(where) as connection:
        rows = [_as_dict(r) for r in connection.execute(
            f"SELECT {', '.join(COLUMNS)} FROM runs ORDER BY id"
        )]  # fmt: skip
    if script:
        full = str(Path(script).resolve())
        rows = [r for r in rows if r["script"] in (full,) or (
            r["script"] and os.path.basename(r["script"]) == script)]  # fmt: skip
    return rows


def load_session(run_id: int, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The session stored with history entry ``run_id`` (a plain dict).

    Raises ``KeyError`` naming the ids present when there is no such entry.

    Example:
        >>> import tempfile
        >>> where = Path(tempfile.mkdtemp()) / "h.sqlite"
        >>> run_id = record_run({"label": "mine", "timeline": [1]}, script=None, path=where)
        >>> load_session(run_id, where)
        {'label': 'mine'}
    """
    where = history_path(path)
    rows = []
    if where is not None and where.exists():
        with connect(where) as connection:
            rows = connection.execute("SELECT session FROM runs WHERE id = ?", (int(run_id),))
            rows = rows.fetchall()
    if not rows or rows[0]["session"] is None:
        known = [r["id"] for r in list_runs(where)] if where is not None else []
        span = f"ids {known[0]}..{known[-1]}" if known else "no entries"
        raise KeyError(
            f"no run {run_id} in the history {where} ({span}); list them with `torchdoctor history`"
        )
    return json.loads(zlib.decompress(rows[0]["session"]).decode("utf-8"))

"""What every integration does with a finished session: files, run history, trackers.

:func:`publish` writes ``session.json`` and the reports (``report.md``, ``report.html``) to a
directory (as ``torchdoctor run --out`` does), appends the run to the history, and logs to the
requested trackers. Nothing here may break the training run it reports on: a tracker that
fails is one line on stderr.

Example:
    >>> import tempfile
    >>> from torchdoctor.session import Session
    >>> done = publish(Session.new("demo", with_environment=False), tempfile.mkdtemp(),
    ...                kind="profile", history=False)
    >>> sorted(p.name for p in done["files"])
    ['report.html', 'session.json']
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def publish(
    session: Any,
    out: str | os.PathLike[str],
    *,
    kind: str,
    script: str | None = None,
    args: Sequence[str] = (),
    history: bool | str | os.PathLike[str] = True,
    trackers: Iterable[str] = (),
    tracker_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the session and reports to ``out``, record it, log it: what was done, as data.

    ``history``: True (the default database), a path, or False. ``trackers``: names from
    :data:`torchdoctor.integrations.trackers.TRACKERS`.
    """
    from torchdoctor.commands.run import write_session

    path = write_session(session, out, script=script)
    files = [p for p in (path, Path(out) / "report.html") if p.exists()]
    done = record_and_track(session, files, kind=kind, script=script, args=args,
                            history=history, trackers=trackers,
                            tracker_options=tracker_options)  # fmt: skip
    return {"session": path, "files": files, **done}


def record_and_track(
    session: Any,
    files: Sequence[str | os.PathLike[str]],
    *,
    kind: str,
    script: str | None = None,
    args: Sequence[str] = (),
    history: bool | str | os.PathLike[str] = True,
    trackers: Iterable[str] = (),
    tracker_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Append the run to the history and log it to trackers: ``{"history_id", "trackers"}``.

    Example:
        >>> record_and_track({}, [], kind="run", history=False)
        {'history_id': None, 'trackers': {}}
    """
    from torchdoctor.collect.history import record_run

    done: dict[str, Any] = {"history_id": None, "trackers": {}}
    if history is not False:
        done["history_id"] = record_run(session, script=script, args=args, kind=kind,
                                        path=None if history is True else history)  # fmt: skip
    for name in trackers:
        from torchdoctor.integrations.trackers import log_to_trackers

        try:
            done["trackers"].update(
                log_to_trackers(session, files, [name], **dict(tracker_options or {}))
            )
        except Exception as exc:  # noqa: BLE001 - the report on disk is what matters
            print(f"torchdoctor: not logged to {name} ({type(exc).__name__}: {exc}); the "
                  "session and reports are on disk", file=sys.stderr)  # fmt: skip
    return done

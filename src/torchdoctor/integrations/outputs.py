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

    Example:
        >>> import tempfile
        >>> from torchdoctor.session import Session
        >>> s = Session.new("demo", with_environment=False)
        >>> done = publish(s, tempfile.mkdtemp(), kind="run", history=False)
        >>> done["session"].name, [p.name for p in done["files"]]
        ('session.json', ['session.json', 'report.html'])
    """
    from torchdoctor.reports import write_session

    path = write_session(session, out, script=script)
    files = [p for p in (path, Path(out) / "report.html") if p.exists()]
    from torchdoctor.integrations.record import record_and_track

    done = record_and_track(session, files, kind=kind, script=script, args=args,
                            history=history, trackers=trackers,
                            tracker_options=tracker_options)  # fmt: skip
    report = Path(out) / "report.md"  # (a callback runs inside the user's script: say where)
    shown = report if report.exists() else path
    print(f"torchdoctor: the {kind} callback's report is in {shown}", file=sys.stderr)
    return {"session": path, "files": files, **done}

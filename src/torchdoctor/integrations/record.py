"""Record a finished run: append it to the run history and log it to experiment trackers.

Used by ``torchdoctor run`` (``--history``, ``--no-history``, ``--mlflow``, ``--wandb``) and by
the framework callbacks (through :func:`torchdoctor.integrations.outputs.publish`). A tracker
that fails is one line on stderr: the session on disk is what matters.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


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
    from torchdoctor.history import record_run

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

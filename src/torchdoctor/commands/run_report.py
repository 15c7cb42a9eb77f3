"""What `run` says after the script: its notices, and the run recorded in the history.

Example:
    >>> run_notices({"config": {"step_boundary": "optimizer"}, "interrupted": True})
    ['the script did not finish: the numbers cover the steps seen until it stopped']
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from torchdoctor.session_read import error_text

WHOLE_RUN_MESSAGE = (
    "no step boundary was found (no torchdoctor.step() marker, optimizer step, backward() "
    "call, module call or --step-fn call): one step = the whole run"
)


def run_notices(session: Any) -> list[str]:
    """The notices `run` prints on stderr about how the session was cut.

    Example:
        >>> run_notices({"config": {"step_boundary": "whole_run"}})[0][:30]
        'no step boundary was found (no'
    """
    config = session.get("config") or {}
    lines = []
    if config.get("step_boundary") == "whole_run":
        lines.append(WHOLE_RUN_MESSAGE)
    error = error_text(session)
    if error:
        lines.append(error)
    elif session.get("interrupted"):
        lines.append("the script did not finish: the numbers cover the steps seen until it stopped")
    return lines


def shown_path(path: Path, start_dir: str) -> str:
    """``path`` as the user gave it: relative to the directory `run` started in when inside it.

    Example:
        >>> shown_path(Path("/work/torchdoctor-out/session.json"), "/work")
        'torchdoctor-out/session.json'
        >>> shown_path(Path("/tmp/out/session.json"), "/work")
        '/tmp/out/session.json'
    """
    relative = os.path.relpath(path, start_dir)
    return str(path) if relative.startswith("..") else relative


def record_run(session: Any, path: Path, args: argparse.Namespace) -> list[str]:
    """Append the run to the history and log it to the trackers asked for (--mlflow, --wandb);
    the notices saying so.

    Example:
        >>> import tempfile
        >>> from torchdoctor.session import Session
        >>> args = argparse.Namespace(no_history=True, history=None, script="t.py",
        ...                           script_args=[], mlflow=False, wandb=False)
        >>> record_run(Session.new("t.py"), Path(tempfile.mkdtemp()) / "session.json", args)
        []
    """
    from torchdoctor.integrations.record import record_and_track

    trackers = [name for name in ("mlflow", "wandb") if getattr(args, name, False)]
    files = [p for p in (path, path.parent / "report.html") if p.exists()]
    history = False if args.no_history else (args.history or True)
    done = record_and_track(session, files, kind="run", script=args.script,
                            args=args.script_args, history=history, trackers=trackers)  # fmt: skip
    lines = [f"run {done['history_id']} in the history"] if done["history_id"] else []
    return lines + [f"logged to {name} (run {run_id})" for name, run_id in done["trackers"].items()]

"""What `run` says after the script: its notices, and the run recorded in the history.

Example:
    >>> run_notices({"config": {"step_boundary": "optimizer"}, "interrupted": True})
    ['the script did not finish: the numbers cover the steps seen until it stopped']
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def print_report(session: Any, fmt: str, *, only_syncs: bool, headline: str | None = None) -> None:
    """Print the session (text, after a ``headline``) or its JSON, after the script's output.

    Example:
        >>> print_report({"config": {"notes": []}, "syncs": []}, "json", only_syncs=True)
        {
         "syncs": [],
         "sync_audit": null,
         "config": {
          "notes": []
         }
        }
    """
    if headline and fmt == "text":  # (a Hogwild script: its children trained, not this process)
        print(f"torchdoctor: {headline}")
    if fmt == "json":
        data = session.to_dict() if hasattr(session, "to_dict") else dict(session)
        if only_syncs:
            data = {"syncs": data.get("syncs"), "sync_audit": data.get("sync_audit"),
                    "config": data.get("config")}  # fmt: skip
        print(json.dumps(data, indent=1, default=str))
        return
    from torchdoctor.render.syncs import render_syncs_text

    if only_syncs:
        print(render_syncs_text(session), end="")
        return
    try:
        from torchdoctor.render.console import render_console
    except ImportError:  # a build without the console report: tree and syncs only
        from torchdoctor.render.tree import render_tree_text

        print(render_tree_text(session))
        print(render_syncs_text(session), end="")
        return
    # The terminal's width (or COLUMNS); piped output gets room for the tree's columns.
    width = max(80, shutil.get_terminal_size((130, 24)).columns)
    if not session.get("advice"):  # rendering never analyses: advise first
        from torchdoctor.reports import with_advice

        session = with_advice(session)
    print(render_console(session, width=width), end="")


def interrupted(command: str, out: str, since: float) -> str:
    """What `run` says when a Ctrl-C reached it rather than the script: where the session is
    (the final one, or the last checkpoint written since ``since``), or that nothing was.

    Example:
        >>> interrupted("run", "/no/such/out", since=0.0)
        'torchdoctor run: interrupted (Ctrl-C) before anything was profiled'
    """
    path = os.path.join(out, "session.json")
    try:
        written = os.path.getmtime(path) >= since
    except OSError:
        written = False
    if not written:
        return f"torchdoctor {command}: interrupted (Ctrl-C) before anything was profiled"
    return (f"torchdoctor {command}: interrupted (Ctrl-C); the session is in {path}: "
            f"`torchdoctor report {path}` prints the report")

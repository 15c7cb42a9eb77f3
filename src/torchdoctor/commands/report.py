"""`torchdoctor report SESSION.json`: re-render a saved session (md, html, json, trace, console).

Example (shell)::

    torchdoctor report run.json --format html -o report.html
    torchdoctor report run.json              # console report on stdout
    torchdoctor report run.json --reanalyze  # the advice of this version's rules

A tune session of the same script (``torchdoctor tune``: ``tune.json`` beside the session, or
``--tune PATH``) is merged in, so the knob advice carries the measured savings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from torchdoctor.render.reports import RENDERERS, infer_format

HELP = "render a saved session as Markdown, HTML, JSON, Chrome trace or console text"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``torchdoctor report``.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="torchdoctor report")
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["run.json", "-o", "report.html"])
        >>> args.session, args.format, infer_format(args.output)
        ('run.json', None, 'html')
    """
    parser.add_argument("session", metavar="SESSION.json", help="a session saved by torchdoctor")
    parser.add_argument(
        "--format",
        "-f",
        choices=tuple(RENDERERS),
        help="report format (default: from the -o suffix, else console)",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--reanalyze",
        action="store_true",
        help="compute the advice again with this torchdoctor's rules (a session keeps the "
        "advice of the version that wrote it)",
    )
    parser.add_argument(
        "--tune",
        metavar="TUNE.json",
        help="a torchdoctor tune session of the same script to merge (default: tune.json "
        "beside SESSION.json, when it measured the same script)",
    )


def merge_tune_session(session: Any, session_path: str, tune_path: str | None) -> Any:
    """The session with a tune session of the same script merged in (unchanged without one).

    Example:
        >>> from torchdoctor.session import Session
        >>> s = Session.new("train.py", with_environment=False)
        >>> merge_tune_session(s, "/nonexistent/session.json", None) is s
        True
    """
    from torchdoctor.session import Session
    from torchdoctor.tuning.session import merge_tune, same_script

    if (session.get("config") or {}).get("command") == "tune":
        return session
    path = Path(tune_path) if tune_path else Path(session_path).parent / "tune.json"
    if not path.is_file():
        if tune_path:
            raise ValueError(f"--tune {tune_path}: no such file; give the tune.json written by "
                             "`torchdoctor tune --out DIR`")  # fmt: skip
        return session
    tune = Session.load(path)
    if not same_script(session, tune):
        if tune_path:
            raise ValueError(f"--tune {tune_path} measured {tune['config'].get('script')}, not "
                             f"{session.get('label')}; give the tune of the same script")  # fmt: skip
        return session
    print(f"torchdoctor report: knob advice measured by {path}", file=sys.stderr)
    return merge_tune(session, tune)


def reanalyzed(session: Any) -> Any:
    """The session with its advice computed again by this torchdoctor's rules (from the
    measurements and lint findings it holds).

    Example:
        >>> from torchdoctor.session import Session
        >>> s = Session.new("train.py", with_environment=False)
        >>> s["advice"] = [{"rule": "old", "title": "stale"}]
        >>> [a["rule"] for a in reanalyzed(s)["advice"]]
        []
    """
    from torchdoctor.analyze.advice import advice_dicts
    from torchdoctor.session import Session

    data = dict(session.to_dict() if hasattr(session, "to_dict") else session)
    data["advice"] = advice_dicts(data)
    return Session.from_dict(data)


def run(args: argparse.Namespace) -> int:
    """Render the saved session; 0, or 2 when it cannot be read.

    Example:
        >>> import argparse
        >>> run(argparse.Namespace(session="no-such-session.json", format="md", output=None))
        2
    """
    from torchdoctor.reports import render_report
    from torchdoctor.session import Session

    try:
        session = Session.load(args.session)
        session = merge_tune_session(session, args.session, getattr(args, "tune", None))
    except (OSError, ValueError, TypeError) as exc:
        print(f"torchdoctor report: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "reanalyze", False):
        session = reanalyzed(session)
    fmt = args.format or infer_format(args.output)
    text = render_report(session, fmt)
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({fmt})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0

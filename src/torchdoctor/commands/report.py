"""`torchdoctor report SESSION.json`: re-render a saved session (md, html, json, trace, console).

Example (shell)::

    torchdoctor report run.json --format html -o report.html
    torchdoctor report run.json              # console report on stdout
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    except (OSError, ValueError, TypeError) as exc:
        print(f"torchdoctor report: {exc}", file=sys.stderr)
        return 2
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

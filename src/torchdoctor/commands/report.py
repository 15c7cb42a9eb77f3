"""`torchdoctor report SESSION.json`: re-render a saved session (md, html, json, trace, console).

Example (shell)::

    torchdoctor report run.json --format html -o report.html
    torchdoctor report run.json              # console report on stdout
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "render a saved session as Markdown, HTML, JSON, Chrome trace or console text"

FORMATS = ("md", "html", "json", "trace", "console")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="SESSION.json", help="a session saved by torchdoctor")
    parser.add_argument(
        "--format",
        "-f",
        choices=FORMATS,
        help="report format (default: from the -o suffix, else console)",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def infer_format(output: str | None) -> str:
    """The format implied by an output file name ('console' without one).

    Example:
        >>> infer_format("r.trace.json"), infer_format("r.html"), infer_format(None)
        ('trace', 'html', 'console')
    """
    if not output:
        return "console"
    name = output.lower()
    if name.endswith((".trace.json", ".trace")):
        return "trace"
    for suffix, fmt in (
        (".md", "md"),
        (".markdown", "md"),
        (".html", "html"),
        (".htm", "html"),
        (".json", "json"),
    ):
        if name.endswith(suffix):
            return fmt
    return "console"


def run(args: argparse.Namespace) -> int:
    from torchdoctor.render.reports import render_report
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

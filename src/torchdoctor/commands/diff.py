"""`torchdoctor diff OLD.json NEW.json`: per-module and per-phase change, syncs removed/added.

Example (shell)::

    torchdoctor diff before.json after.json
    torchdoctor diff before.json after.json --format json -o diff.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "compare two saved sessions: step, phases, modules, syncs removed and added"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``torchdoctor diff``.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="torchdoctor diff")
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["before.json", "after.json", "-f", "json"])
        >>> args.old, args.new, args.format, args.max_modules
        ('before.json', 'after.json', 'json', 25)
    """
    parser.add_argument("old", metavar="OLD.json", help="the session before the change")
    parser.add_argument("new", metavar="NEW.json", help="the session after the change")
    parser.add_argument("--format", "-f", choices=("md", "json"), default="md")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--max-modules", type=int, default=25, help="module rows to show (default 25)"
    )


def run(args: argparse.Namespace) -> int:
    """Compare the two saved sessions; 0, or 2 when one cannot be read.

    Example:
        >>> import argparse
        >>> run(argparse.Namespace(old="missing-a.json", new="missing-b.json", format="md",
        ...                        output=None, max_modules=25))
        2
    """
    from torchdoctor.analyze.diff import diff_sessions
    from torchdoctor.render.diff import render_diff
    from torchdoctor.session import Session

    try:
        old, new = Session.load(args.old), Session.load(args.new)
    except (OSError, ValueError, TypeError) as exc:
        print(f"torchdoctor diff: {exc}", file=sys.stderr)
        return 2
    result = diff_sessions(old, new)
    if args.format == "json":
        text = json.dumps(result, indent=1, allow_nan=False) + "\n"
    else:
        text = render_diff(result, max_modules=args.max_modules)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0

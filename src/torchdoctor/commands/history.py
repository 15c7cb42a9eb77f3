"""`torchdoctor history [SCRIPT]`: the runs recorded by `run` and `profile`, step time over runs.

Example (shell)::

    torchdoctor history                      # every run, and a sparkline per script
    torchdoctor history train.py --format json
    torchdoctor history --format html -o history.html
    torchdoctor diff 3 7                     # compare two of the listed runs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torchdoctor.commands.argtypes import positive

HELP = "list recorded runs (`run`, `profile`, callbacks) and the step time over runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``history``'s options to ``parser``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["train.py", "--last", "3"])
        >>> args.script, args.last, args.format
        ('train.py', 3, 'text')
    """
    parser.add_argument(
        "script", metavar="SCRIPT", nargs="?", default=None,
        help="only this script's runs (a path, or a file name)",
    )  # fmt: skip
    parser.add_argument("--format", "-f", choices=("text", "json", "html"), default="text")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--last", metavar="N", type=positive, default=None, help="the last N runs only"
    )
    parser.add_argument(
        "--history", metavar="PATH", default=None,
        help="history database (default: $TORCHDOCTOR_HISTORY, else "
        "~/.cache/torchdoctor/history.sqlite)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """List the recorded runs as ``args`` asks; the exit status (2: history is off).

    Example:
        >>> import tempfile
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> where = str(Path(tempfile.mkdtemp()) / "h.sqlite")
        >>> run(parser.parse_args(["--history", where, "--format", "json"]))
        []
        0
    """
    from torchdoctor.history import history_path, list_runs

    where = history_path(args.history)
    if where is None:
        print("torchdoctor history: the run history is off (TORCHDOCTOR_HISTORY=off); set "
              "TORCHDOCTOR_HISTORY=PATH or pass --history PATH", file=sys.stderr)  # fmt: skip
        return 2
    rows = list_runs(where, args.script)
    if args.last:
        rows = rows[-args.last :]
    if args.format == "json":
        text = json.dumps(rows, indent=1) + "\n"
    elif args.format == "html":
        from torchdoctor.render.history import render_history_html

        text = render_history_html(rows)
    else:
        from torchdoctor.render.history import render_history_text

        text = render_history_text(rows)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.format == "text":
        print(f"history: {where}", file=sys.stderr)
    return 0

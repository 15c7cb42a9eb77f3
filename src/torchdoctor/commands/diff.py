"""`torchdoctor diff A B`: per-module and per-phase change, syncs removed/added; a CI gate.

A and B are session files or run-history ids (``torchdoctor history`` lists them). With
``--fail-if-slower 5%`` the command exits with 1 when B's median step time is slower than A's
by more than 5% and beyond the two runs' measured spread (``torchdoctor.analyze.gate``); the
verdict is printed as Markdown and appended to ``$GITHUB_STEP_SUMMARY`` when that is set.

Example (shell)::

    torchdoctor diff before.json after.json
    torchdoctor diff 3 7                                   # two history entries
    torchdoctor diff base/session.json new/session.json --fail-if-slower 5%
    torchdoctor diff before.json after.json --format json -o diff.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HELP = "compare two saved sessions (files or history ids); --fail-if-slower gates CI on step time"


def threshold_pct(text: str) -> float:
    """``"5%"`` or ``"5"`` -> 5.0 (a percentage >= 0).

    Example:
        >>> threshold_pct("5%"), threshold_pct("2.5")
        (5.0, 2.5)
    """
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(
            f"expected a percentage >= 0 such as 5% or 2.5, got {text!r}"
        )
    return value


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
    parser.add_argument("old", metavar="A", help="the base: session.json, or a run-history id")
    parser.add_argument("new", metavar="B", help="the new run: session.json, or a history id")
    parser.add_argument("--format", "-f", choices=("md", "json"), default="md")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--max-modules", type=int, default=25, help="module rows to show (default 25)"
    )
    parser.add_argument(
        "--fail-if-slower", metavar="PCT", type=threshold_pct, default=None,
        help="exit with 1 when B's median step is slower than A's by more than PCT (e.g. 5%%) "
        "and beyond the runs' spread (B's q1 above A's q3)",
    )  # fmt: skip
    parser.add_argument(
        "--history", metavar="PATH", default=None,
        help="run history holding the ids (default: $TORCHDOCTOR_HISTORY or the user cache)",
    )  # fmt: skip


def load_operand(text: str, history: str | None = None) -> Any:
    """A session from a file path, else from the run history when ``text`` is an id.

    Example:
        >>> load_operand("no-such-file.json")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no-such-file.json: no such session file (nor a run-history id); ...
    """
    from torchdoctor.session import Session

    if os.path.exists(text) or not text.lstrip("#").isdigit():
        if not os.path.exists(text):
            raise FileNotFoundError(
                f"{text}: no such session file (nor a run-history id); give a session.json "
                "written by `torchdoctor run`, or an id listed by `torchdoctor history`"
            )
        return Session.load(text)
    from torchdoctor.history import load_session

    return Session.from_dict(load_session(int(text.lstrip("#")), history))


def run(args: argparse.Namespace) -> int:
    """Compare the two saved sessions; 0, or 2 when one cannot be read.

    Example:
        >>> import argparse
        >>> run(argparse.Namespace(old="missing-a.json", new="missing-b.json", format="md",
        ...                        output=None, max_modules=25, history=None,
        ...                        fail_if_slower=None))
        2
    """
    from torchdoctor.analyze.diff import diff_sessions
    from torchdoctor.render.diff import render_diff

    try:
        old = load_operand(args.old, args.history)
        new = load_operand(args.new, args.history)
    except KeyError as exc:
        print(f"torchdoctor diff: {exc.args[0]}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as exc:
        print(f"torchdoctor diff: {exc}", file=sys.stderr)
        return 2
    result = diff_sessions(old, new)
    gate_text, status = "", 0
    if args.fail_if_slower is not None:
        from torchdoctor.analyze.gate import step_gate
        from torchdoctor.render.gate import render_gate

        try:
            gate = step_gate(old, new, args.fail_if_slower)
        except ValueError as exc:
            print(f"torchdoctor diff: {exc}", file=sys.stderr)
            return 2
        result["gate"] = gate
        gate_text = render_gate(gate, args.old, args.new)
        status = 1 if gate["slower"] else 0
    if args.format == "json":
        text = json.dumps(result, indent=1, allow_nan=False) + "\n"
    else:
        text = (gate_text + "\n" if gate_text else "") + render_diff(
            result, max_modules=args.max_modules
        )
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if gate_text and summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(gate_text + "\n")
    if gate_text and args.format == "json":  # stdout holds the JSON: the verdict to stderr
        print(gate_text, file=sys.stderr)
    return status

"""Command-line entry point: ``torchdoctor SUBCOMMAND ...`` (also ``python -m torchdoctor``).

Subcommands are registered in one place, :data:`COMMANDS`. Each value names a module in
``torchdoctor.commands`` that defines ``HELP`` (one line: the only copy of a command's help),
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code). Command modules import only
the standard library at module level (their work is imported when the command runs), so
``torchdoctor --help`` reading every ``HELP`` stays fast.

Example:
    >>> build_parser().prog
    'torchdoctor'
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from torchdoctor import __version__

#: name -> module path. The only place where subcommands are registered.
COMMANDS: dict[str, str] = {
    "run": "torchdoctor.commands.run",
    "syncs": "torchdoctor.commands.syncs",
    "demo": "torchdoctor.commands.demo",
    "lint": "torchdoctor.commands.lint",
    "report": "torchdoctor.commands.report",
    "diff": "torchdoctor.commands.diff",
    "bench": "torchdoctor.commands.bench",
    "ranks": "torchdoctor.commands.ranks",
    "history": "torchdoctor.commands.history",
    "tune": "torchdoctor.commands.tune",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: ``--version`` and one sub-command per :data:`COMMANDS` entry.

    Example:
        >>> "lint" in build_parser().format_help()
        True
    """
    parser = argparse.ArgumentParser(
        prog="torchdoctor",
        description="Find out why a PyTorch step is slow, and what to do about it.",
    )
    parser.add_argument("--version", action="version", version=f"torchdoctor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub.add_parser(name, help=importlib.import_module(module).HELP, add_help=False)
    return parser


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module = importlib.import_module(COMMANDS[name])
    parser = argparse.ArgumentParser(prog=f"torchdoctor {name}", description=module.HELP)
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 findings/failure, 2 usage error).

    Example:
        >>> main(["report", "no-such-session.json"])
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] not in COMMANDS:
        # --help, --version, or an unknown command: argparse prints and exits with 0 or 2.
        top.parse_args(argv)
        top.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    try:
        parser, module = _command_parser(name)
        parse = getattr(module, "parse_args", None)
        args = parse(parser, rest) if parse else parser.parse_args(rest)
        return int(module.run(args) or 0)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the broken pipe
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback through torchdoctor's code
        print(f"torchdoctor {name}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (tests, embedded): nothing
        pass


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

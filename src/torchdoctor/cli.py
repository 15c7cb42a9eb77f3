"""Command-line entry point: ``torchdoctor SUBCOMMAND ...`` (also ``python -m torchdoctor``).

Subcommands are registered in one place, :data:`COMMANDS`. Each value names a module in
``torchdoctor.commands`` that defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code). Modules are imported only when their command runs, so
``torchdoctor --help`` stays fast.
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
    "tune": "torchdoctor.commands.tune",
}

#: one-line help for each command, kept here so `--help` imports nothing heavy.
HELP: dict[str, str] = {
    "run": "profile an unmodified training script; write the session and print the report at exit",
    "syncs": "run a script and list every host-device sync by source line",
    "demo": "profile a built-in slow workload, print the findings, then run and verify its fast version",
    "lint": "static check for the seed anti-patterns (TD codes), with --fix/--diff",
    "report": "render a saved session as Markdown, HTML, JSON, Chrome trace or console text",
    "diff": "compare two saved sessions: step, phases, modules, syncs removed and added",
    "bench": "run registered benchmark suites and print (or write) their tables",
    "ranks": "compare the per-rank sessions of a torchrun run (torchdoctor run) and name the straggler",
    "tune": "measure engine knobs (autocast, compile, channels_last, ...) on the script's own step",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchdoctor",
        description="Find out why a PyTorch step is slow, and what to do about it.",
    )
    parser.add_argument("--version", action="version", version=f"torchdoctor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=HELP.get(name, ""), add_help=False)
    return parser


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module = importlib.import_module(COMMANDS[name])
    parser = argparse.ArgumentParser(
        prog=f"torchdoctor {name}", description=getattr(module, "HELP", HELP.get(name))
    )
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 findings/failure, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] not in COMMANDS:
        # --help, --version, or an unknown command: argparse prints and exits with 0 or 2.
        top.parse_args(argv)
        top.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    parser, module = _command_parser(name)
    parse = getattr(module, "parse_args", None)
    args = parse(parser, rest) if parse else parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the broken pipe


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

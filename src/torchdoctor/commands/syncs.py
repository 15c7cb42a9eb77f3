"""`torchdoctor syncs SCRIPT [ARGS...]`: run a script and print only its host-sync table.

Same options and behaviour as `torchdoctor run` (the session is still written to ``--out``),
with the module tree and phases left out of the output and the profiler's backward and memory
tracking off, so the run costs less; the audit covers every step (``--detail always`` is the
default here: a sync in a step between detail windows would go unseen)::

    torchdoctor syncs train.py --epochs 1
    torchdoctor syncs --thorough --format json -- train.py --format csv
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from torchdoctor.commands import run as _run

HELP = "run a script and list every host-device sync by source line"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``torchdoctor syncs``: those of ``torchdoctor run``.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="torchdoctor syncs")
        >>> add_arguments(parser)
        >>> parser.parse_args(["--thorough"]).thorough
        True
    """
    _run.add_arguments(parser)
    parser.set_defaults(detail="always")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Split torchdoctor's options from the script's, as ``torchdoctor run`` does.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="torchdoctor syncs")
        >>> add_arguments(parser)
        >>> args = parse_args(parser, ["--warmup", "0", "train.py", "--lr", "1"])
        >>> args.warmup, args.script, args.script_args
        (0, 'train.py', ['--lr', '1'])
    """
    return _run.parse_args(parser, argv)


def run(args: argparse.Namespace) -> int:
    """Run the script under the sync audit; the script's exit code (2 when it is missing).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> run(parse_args(parser, ["no_such_script.py"]))
        2
    """
    return _run.execute(args, command="syncs", only_syncs=True)

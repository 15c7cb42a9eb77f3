"""`torchdoctor ranks DIR`: compare the per-rank sessions of a torchrun run and name the straggler.

``torchdoctor run`` under torchrun writes ``DIR/rank<r>/session.json`` for every rank and rank 0
prints this comparison at exit; this command prints it again from the files (for example after
a run whose rank 0 stopped waiting before a slow rank finished).

Example (shell)::

    torchrun --nproc_per_node 4 -m torchdoctor run train.py
    torchdoctor ranks torchdoctor-out
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HELP = "compare the per-rank sessions of a torchrun run (torchdoctor run) and name the straggler"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out", metavar="DIR", nargs="?", default="torchdoctor-out",
        help="the --out directory of the run, holding rank<r>/session.json (default: "
        "./torchdoctor-out)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from torchdoctor.commands.run import compare_rank_sessions

    root = Path(args.out)
    ranks = sorted(
        int(match.group(1))
        for child in (root.iterdir() if root.is_dir() else ())
        if (match := re.fullmatch(r"rank(\d+)", child.name)) and (child / "session.json").exists()
    )
    if len(ranks) < 2:
        print(f"torchdoctor ranks: error: {root} holds {len(ranks)} rank<r>/session.json "
              "file(s); it needs two or more, as `torchrun ... -m torchdoctor run SCRIPT` "
              "writes them", file=sys.stderr)  # fmt: skip
        return 2
    result = compare_rank_sessions(str(root), max(ranks) + 1, wait_s=0.0)
    return 0 if result is not None else 1

"""`torchdoctor tune [OPTIONS] SCRIPT [ARGS...]`: measure the engine knobs on the script's step.

Each trial runs the unmodified script in a fresh process with one knob on (bf16 autocast,
torch.compile, channels_last, TF32, fused optimizer, DataLoader workers, ...), stops it after
its warm-up and measured steps, and compares it with a baseline run just before it under the
same seed: speedup (median of pairs, with spread), warm-up/compile cost, peak memory, drift.
Then the best compatible set runs as one more trial. ``--budget`` bounds the whole tune;
Ctrl-C keeps the trials done so far. The session (``OUT/tune.json``) carries measured knob
advice; ``torchdoctor report`` merges it into a ``run`` session of the same script.

torchdoctor's options go before the script, as with ``run``::

    torchdoctor tune examples/slow_train.py
    torchdoctor tune --budget 120 --knobs compile,bf16_autocast train.py --epochs 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchdoctor.commands.argtypes import module_target
from torchdoctor.commands.argtypes import non_negative as _non_negative
from torchdoctor.commands.argtypes import positive as _positive
from torchdoctor.commands.argtypes import positive_float as _positive_float

HELP = "measure engine knobs (autocast, compile, channels_last, ...) on the script's own step"

VALUE_OPTIONS = ("--budget", "--knobs", "--tolerance", "--warmup", "--steps", "--rounds",
                 "--seed", "--out", "--format")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add tune's options (they go before SCRIPT) to parser.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["--budget", "60", "--knobs", "tf32"])
        >>> args.budget, args.knobs, args.tolerance, args.warmup
        (60.0, 'tf32', 0.05, 2)
    """
    from torchdoctor.tuning.knobs import knob_names

    parser.allow_abbrev = False
    parser.add_argument("script", metavar="SCRIPT", nargs="?", help="the Python script to tune")
    parser.add_argument("script_args", metavar="ARGS", nargs="*", help="passed to the script")
    parser.add_argument("--budget", metavar="SECONDS", type=_positive_float, default=300.0,
                        help="time for the whole tune; trials and steps are scaled to fit "
                        "(default: 300)")  # fmt: skip
    parser.add_argument("--knobs", metavar="A,B", default=None,
                        help="only these knobs, comma-separated (default: all that apply): "
                        + ", ".join(knob_names()))  # fmt: skip
    parser.add_argument("--tolerance", metavar="X", type=_positive_float, default=0.05,
                        help="largest relative change of the loss (or output) accepted, unless "
                        "the baseline's own drift x 3 is larger (default: 0.05)")  # fmt: skip
    parser.add_argument("--warmup", metavar="N", type=_non_negative, default=2,
                        help="steps each trial runs before measuring (default: 2)")  # fmt: skip
    parser.add_argument("--steps", metavar="N", type=_positive, default=None,
                        help="measured steps per trial (default: what fits the budget)")  # fmt: skip
    parser.add_argument("--rounds", metavar="N", type=_positive, default=None,
                        help="(baseline, knob) pairs per knob (default: what fits, up to 3)")  # fmt: skip
    parser.add_argument("--seed", metavar="N", type=int, default=0,
                        help="seed set at each trial's start (default: 0)")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", default="torchdoctor-out",
                        help="directory for tune.json and the trial logs")  # fmt: skip
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="what to print: the table (text) or the tune result as JSON")  # fmt: skip


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """torchdoctor's options, then the script and its arguments (``--`` separates if needed).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> args = parse_args(parser, ["--steps", "5", "train.py", "--steps", "100"])
        >>> args.steps, args.script, args.script_args  # the script's own --steps is passed through
        (5, 'train.py', ['--steps', '100'])
    """
    from torchdoctor.collect.script_module import MODULE_PREFIX

    ours: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            rest = list(argv[i + 1 :])
            break
        module = module_target(list(argv), i)
        if module is not None:  # -m MODULE, as python's
            if not module[0]:
                parser.error("-m needs a module name, as in `-m pkg.train --epochs 1`")
            rest = [MODULE_PREFIX + module[0], *module[1]]
            break
        if token.startswith("-") and token != "-":
            ours.append(token)
            if token in VALUE_OPTIONS and i + 1 < len(argv):
                ours.append(argv[i + 1])
                i += 1
            i += 1
            continue
        rest = list(argv[i:])
        break
    args = parser.parse_args(ours)
    if not rest:
        parser.error("missing SCRIPT: give the Python script to tune, e.g. `train.py --epochs 1`")
    args.script, args.script_args = rest[0], rest[1:]
    return args


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    console=Console(file=sys.stderr), transient=True)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Tune args.script: print the table, write OUT/tune.json; the exit status.

    Example (the smallest call: a script that does not exist is refused before any trial):
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> run(parse_args(parser, ["no/such/train.py"]))
        2
    """
    from torchdoctor.collect.script import ScriptNotFoundError
    from torchdoctor.collect.script_module import load_target
    from torchdoctor.render.tune import render_tune_text
    from torchdoctor.tuning.runner import tune_script
    from torchdoctor.tuning.session import tune_session

    try:
        load_target(args.script)  # a missing file or a syntax error: said before any trial
    except (ScriptNotFoundError, SyntaxError) as exc:
        print(f"torchdoctor tune: error: {exc}", file=sys.stderr)
        return 2
    knobs = [k.strip() for k in args.knobs.split(",") if k.strip()] if args.knobs else None
    out = Path(args.out)
    bar = _progress_bar(sys.stderr.isatty())
    task = bar.add_task("tune", total=1.0) if bar else None

    def progress(text: str, done: float) -> None:
        if bar is not None:
            bar.update(task, description=text, completed=done)
        else:
            print(f"torchdoctor tune: {text}", file=sys.stderr)

    try:
        if bar is not None:
            bar.start()
        result = tune_script(
            args.script, args.script_args, budget_s=args.budget, knobs=knobs,
            tolerance=args.tolerance, warmup=args.warmup, steps=args.steps, rounds=args.rounds,
            seed=args.seed, workdir=out / "tune-trials", progress=progress,
        )  # fmt: skip
    except ValueError as exc:  # an unknown knob name
        print(f"torchdoctor tune: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.stop()
    session = tune_session(result)
    path = session.save(out / "tune.json")
    if args.format == "json":
        print(json.dumps(result, indent=1, default=str))
    else:
        width = max(80, shutil.get_terminal_size((130, 24)).columns)
        print(render_tune_text(result, width=width), end="")
    print(f"torchdoctor: tune session written to {path}; `torchdoctor report` of a run session "
          f"in the same directory shows the measured knob advice", file=sys.stderr)  # fmt: skip
    baseline = result.get("baseline") or {}
    return 1 if baseline.get("step_ms") is None else 0

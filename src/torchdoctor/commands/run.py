"""`torchdoctor run SCRIPT [ARGS...]`: profile an unmodified script, report at exit.

The script runs in this process as ``python SCRIPT ARGS`` would, under a step profiler and the
sync audit. Steps end at ``torchdoctor.step()`` markers, else optimizer steps, else
``backward()`` calls, else calls of the outermost module, else the whole run is one step;
``--step-fn NAME`` makes each call of one function a step. At exit (normal, exception,
``sys.exit``, Ctrl-C) the session is written to ``--out`` and the report printed.

torchdoctor's options go before the script; everything after the script goes to it. When the
script has options of the same name, separate with ``--``::

    torchdoctor run train.py --epochs 1
    torchdoctor run --warmup 2 --max-steps 20 train.py --epochs 1
    torchdoctor run --out prof -- train.py --out checkpoints   # --out twice: use --
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchdoctor.collect.checkpoint import DEFAULT_EVERY_S as DEFAULT_CHECKPOINT_S
from torchdoctor.collect.schedule import DETAIL_BUDGET
from torchdoctor.commands.argtypes import module_target, unwritable_out
from torchdoctor.commands.argtypes import non_negative as _non_negative
from torchdoctor.commands.argtypes import percent as _percent
from torchdoctor.commands.argtypes import positive as _positive
from torchdoctor.commands.argtypes import seconds as _seconds
from torchdoctor.commands.run_report import interrupted, print_report
from torchdoctor.commands.run_session import write_or_keep

HELP = "profile an unmodified training script; write the session and print the report at exit"

#: torchdoctor's options that take a value (needed to find where the script name starts)
VALUE_OPTIONS = ("--out", "--warmup", "--max-steps", "--step-fn", "--format", "--history",
                 "--detail", "--detail-window", "--detail-period", "--detail-period-s",
                 "--detail-budget", "--checkpoint-every")  # fmt: skip
FLAG_OPTIONS = ("--thorough", "--no-history", "--mlflow", "--wandb", "--no-hot-lines", "--live",
                "--quiet")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `run`'s options to ``parser``; e.g. ``--warmup`` is 1 unless given:
    >>> p = argparse.ArgumentParser(); add_arguments(p); p.parse_args([]).warmup
    1
    """
    parser.allow_abbrev = False  # `--max 3` must not become --max-steps: the script may own it
    parser.add_argument("script", metavar="SCRIPT", nargs="?", help="the Python script to run")
    parser.add_argument(
        "-m", dest="module", metavar="MODULE",
        help="run a module as `python -m MODULE ARGS` would, instead of SCRIPT",
    )  # fmt: skip  (split_command_line takes it: what follows is the module's)
    parser.add_argument(
        "script_args", metavar="ARGS", nargs="*", help="arguments passed to the script unchanged"
    )
    parser.add_argument(
        "--out", metavar="DIR", default="torchdoctor-out",
        help="directory for session.json (default: ./torchdoctor-out)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", metavar="N", type=_non_negative, default=1,
        help="steps to skip before measuring (default: 1, the step that includes set-up)",
    )  # fmt: skip
    parser.add_argument(
        "--max-steps", metavar="N", type=_positive, default=None,
        help="stop collecting (not the script) after N measured steps",
    )  # fmt: skip
    parser.add_argument(
        "--step-fn", metavar="QUALNAME", default=None,
        help="each call of this function is one step: NAME or Class.method in the script, "
        "or module:NAME",
    )  # fmt: skip
    parser.add_argument(
        "--format", choices=("text", "json"), default="text",
        help="what to print at exit (default: text); with json, stdout holds the JSON alone and "
        "the script's own output goes to stderr",
    )  # fmt: skip
    parser.add_argument(
        "--no-hot-lines", action="store_true",
        help="do not time user source lines (the Hot lines section and line advice); lowers "
        "the profiler's cost on steps made of many tiny ops",
    )  # fmt: skip
    parser.add_argument(
        "--thorough", action="store_true",
        help="sync audit at the aten level too (finds syncs inside torch's code; slower)",
    )  # fmt: skip
    parser.add_argument(
        "--history", metavar="PATH", default=None,
        help="run history database to append to (default: $TORCHDOCTOR_HISTORY, else "
        "~/.cache/torchdoctor/history.sqlite); see `torchdoctor history`",
    )  # fmt: skip
    parser.add_argument("--no-history", action="store_true", help="do not record this run")
    parser.add_argument(
        "--mlflow", action="store_true",
        help="log summary metrics and session.json/report.html to MLflow (MLFLOW_TRACKING_URI)",
    )  # fmt: skip
    parser.add_argument(
        "--wandb", action="store_true",
        help="log summary metrics and session.json/report.html to W&B (WANDB_PROJECT, WANDB_MODE)",
    )  # fmt: skip
    parser.add_argument(
        "--detail", choices=("windows", "always"), default="windows",
        help="when to record the module tree and the sync audit: in windows of steps (default; "
        "step time and phases on every step, and one step aimed at long steps that come at a "
        "regular gap: an evaluation every N steps) or on every step (costs more)",
    )  # fmt: skip
    parser.add_argument(
        "--detail-window", metavar="N", type=_positive, default=5,
        help="steps per detail window (default: 5)",
    )  # fmt: skip
    parser.add_argument(
        "--detail-period", metavar="N", type=_positive, default=100,
        help="a detail window opens every N steps (default: 100) ...",
    )  # fmt: skip
    parser.add_argument(
        "--detail-period-s", metavar="SECONDS", type=float, default=60.0,
        help="... or every SECONDS seconds, whichever comes first (default: 60)",
    )  # fmt: skip
    parser.add_argument(
        "--detail-budget", metavar="PCT", type=_percent, default=100 * DETAIL_BUDGET,
        help="... once what detailed steps cost over light ones is under PCT%% of the steps' "
        f"time so far (default: {100 * DETAIL_BUDGET:g}; 100: never wait)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint-every", metavar="SECONDS", type=_seconds, default=DEFAULT_CHECKPOINT_S,
        help="write OUT/session.json (marked incomplete) at the first step boundary after every "
        f"SECONDS, so a killed run leaves a report (default: {DEFAULT_CHECKPOINT_S:g}; 0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--live", action="store_true",
        help="show a one-screen summary on stderr while the script runs (a terminal only)",
    )  # fmt: skip
    parser.add_argument(
        "--quiet", action="store_true",
        help="print no report and no notices at exit (the files in --out are written; errors "
        "are still said)",
    )  # fmt: skip


def split_command_line(argv: Sequence[str]) -> tuple[list[str], list[str], bool]:
    """``(torchdoctor options, [SCRIPT, *ARGS], separated_by_dashes)``.

    Example:
        >>> split_command_line(["--warmup", "2", "train.py", "--lr", "1"])
        (['--warmup', '2'], ['train.py', '--lr', '1'], False)
        >>> split_command_line(["--out", "p", "--", "train.py", "--out", "c"])
        (['--out', 'p'], ['train.py', '--out', 'c'], True)
    """
    ours: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return ours, list(argv[i + 1 :]), True
        module = module_target(list(argv), i)
        if module is not None:  # -m MODULE, as python's
            name, rest = module
            if rest[:1] == ["--"]:
                return ours, ["-m", name, *rest[1:]], True
            return ours, ["-m", name, *rest], False
        if token.startswith("-") and token != "-":
            ours.append(token)
            if token in VALUE_OPTIONS and i + 1 < len(argv):
                ours.append(argv[i + 1])
                i += 2
            else:
                i += 1
            continue
        rest = list(argv[i:])
        if len(rest) > 1 and rest[1] == "--":  # `torchdoctor run train.py -- --out x`
            return ours, [rest[0], *rest[2:]], True
        return ours, rest, False
    return ours, [], False


def _clashes(script_args: Sequence[str]) -> list[str]:
    names = set(VALUE_OPTIONS) | set(FLAG_OPTIONS)
    return [a for a in script_args if a.split("=", 1)[0] in names]


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Our options before SCRIPT, the script's after it, even when they share a name (a notice
    on stderr says so; ``--`` silences it):
    >>> p = argparse.ArgumentParser(); add_arguments(p)
    >>> args = parse_args(p, ["--warmup", "2", "t.py", "--lr", "1"]); args.script_args
    ['--lr', '1']
    """
    ours, command, separated = split_command_line(argv)
    args = parser.parse_args(ours)
    if not command:
        parser.error("missing SCRIPT: give the Python script to run, e.g. `train.py --epochs 1`")
    args.module = None
    if command[0] == "-m":
        if not command[1]:
            parser.error("-m needs a module name, as in `-m pkg.train --epochs 1`")
        args.module, command = command[1], command[1:]
    args.script, args.script_args = command[0], command[1:]
    clashes = [] if separated else _clashes(args.script_args)
    if clashes:  # the script's own option (makemore's --max-steps): passed on, as python does
        prog = parser.prog
        print(
            f"{prog}: {clashes[0]} comes after the script name: it is passed to {args.script} "
            f"(the script's own option); {prog}'s options go before the script "
            f"(`{prog} {clashes[0]} ... {args.script}`)",
            file=sys.stderr,
        )
    return args


# -- running ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _stdout_to_stderr():
    """Send everything written to stdout (fd 1, Python's and child processes') to stderr."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (an embedded interpreter): Python-level only
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def profile_script(args: argparse.Namespace, *, full: bool) -> tuple[Any, Any]:
    """Run ``args.script`` under the profiler and the sync audit: ``(outcome, session)``.

    Raises :class:`~torchdoctor.collect.script.ScriptNotFoundError`, ``SyntaxError`` or
    ``ValueError`` (bad ``--step-fn``) before anything runs.
    """
    from torchdoctor.collect.collectives import CollectiveTimer
    from torchdoctor.collect.script import load_script, run_script
    from torchdoctor.collect.script_module import load_module
    from torchdoctor.collect.sigint import defer_while_finishing
    from torchdoctor.collect.syncs import sync_audit
    from torchdoctor.commands.run_children import follow_children
    from torchdoctor.commands.run_session import add_run_fields, attach_collectives, make_profiler
    from torchdoctor.commands.run_watch import (
        checkpoint_at_hard_exit,
        start_checkpoints,
        start_live,
    )

    if getattr(args, "module", None):
        script = load_module(args.module, args.step_fn)
        label = args.module
    else:
        script = load_script(args.script, args.step_fn)
        label = os.path.basename(args.script)
    args.script_path = script.path
    profiler = make_profiler(args, full=full, label=label)
    audit = sync_audit(thorough=args.thorough)
    collectives = CollectiveTimer()
    profiler.start()
    if full:  # processes the script starts (a Hogwild trainer, mp.spawn) get profiles too
        follow_children(profiler, args)
    outcome = None
    live = None
    try:
        audit.__enter__()
        profiler.pace_audit(audit)  # paused outside the profiler's detail windows
        writer = start_checkpoints(
            profiler, args, lambda session: add_run_fields(session, args, audit)
        )
        restore_exit = checkpoint_at_hard_exit(profiler, writer)
        try:
            collectives.start()
            # With --format json stdout carries the JSON alone (pipe it to jq): the script's
            # own output goes to stderr, at the file-descriptor level (worker processes too).
            with _stdout_to_stderr() if args.format == "json" else contextlib.nullcontext():
                live = start_live(profiler, args, audit)
                outcome = run_script(script, args.script_args, on_step_fn_end=profiler.step)
        finally:
            restore_exit()
            collectives.stop()
            if live is not None:
                live.stop()
            audit.stop()
    finally:
        if profiler.forked:  # the script forked and this is the child (os.fork) ending: it
            # exits as it would without torchdoctor, writing nothing over the parent's report
            sys.stdout.flush()
            raise SystemExit(outcome.exit_code if outcome is not None else 1)
        defer_while_finishing()  # (a Ctrl-C now waits until the session is written)
        failure = outcome.exception if outcome is not None else sys.exc_info()[1]
        if failure is not None:
            profiler.__exit__(type(failure), failure, failure.__traceback__)
            session = profiler.session
        else:
            session = profiler.stop()
    if outcome.traceback_text:
        session["error"] = outcome.traceback_text  # without torchdoctor's own frames
    add_run_fields(session, args, audit)
    attach_collectives(args, collectives, session)
    session["config"]["exit_code"] = outcome.exit_code
    return outcome, session


def execute(args: argparse.Namespace, *, command: str, only_syncs: bool) -> int:
    """Shared by `run` and `syncs`: run, write the session, print, return the script's code;
    130 after a Ctrl-C that reached torchdoctor (see :func:`interrupted`)."""
    began = time.time()
    try:
        with contextlib.suppress(ImportError):  # before torch, whose C init imports NumPy and
            import numpy  # noqa: F401  (swallows a Ctrl-C raised there: the run went on)
        return _execute(args, command=command, only_syncs=only_syncs)
    except KeyboardInterrupt:  # before the script ran, or a third Ctrl-C while finishing
        print(interrupted(command, os.path.abspath(args.out), since=began), file=sys.stderr)
        return 130
    finally:
        if "torchdoctor.collect.sigint" in sys.modules:  # (Python's own Ctrl-C handler back)
            sys.modules["torchdoctor.collect.sigint"].finished()


def _execute(args: argparse.Namespace, *, command: str, only_syncs: bool) -> int:
    """:func:`execute`'s work.

    Under torchrun every rank writes ``OUT/rank<r>/`` and sends its session to rank 0 through
    the process group's store; rank 0 prints the report, then waits for the other ranks'
    sessions (store or files) and prints (and writes ``OUT/ranks.md``, ``OUT/ranks.json``)
    their comparison with the straggler named.
    """
    from torchdoctor.collect.notebook import NOTEBOOK_NOTE, is_notebook
    from torchdoctor.collect.script import ScriptNotFoundError
    from torchdoctor.commands.ranks import distributed_rank, merge_ranks, rank_environment
    from torchdoctor.commands.run_children import (
        annotate_children,
        child_sessions,
        children_headline,
        children_notices,
        compare_child_ranks,
    )
    from torchdoctor.commands.run_report import record_run, run_notices, shown_path

    started = time.time()
    dist = distributed_rank()
    # absolute now: a script that changes directory (os.chdir) must not move the output, nor
    # hide itself from the lint run after it
    start_dir = os.getcwd()
    args.out = os.path.abspath(args.out)
    script_path = os.path.abspath(args.script)
    out_root = args.out
    if (problem := unwritable_out(out_root)) is not None:  # (before the run, not after it)
        print(f"torchdoctor {command}: error: {problem}", file=sys.stderr)
        return 2
    if dist is not None:
        args.out = os.path.join(out_root, f"rank{dist[0]}")
        stale = Path(args.out) / "session.json"
        if stale.exists():  # a previous run's: must not pass for this run's in the comparison
            stale.unlink()
    try:
        outcome, session = profile_script(args, full=not only_syncs)
    except SyntaxError as exc:
        sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
        print(
            f"torchdoctor {command}: {args.script} has a syntax error; nothing was run. Fix it "
            f"and check with `python -m py_compile {args.script}`",
            file=sys.stderr,
        )
        return 1
    except (ScriptNotFoundError, ValueError) as exc:  # (ValueError: a bad --step-fn)
        print(f"torchdoctor {command}: error: {exc}", file=sys.stderr)
        return 2
    status = outcome.exit_code
    script_path = getattr(args, "script_path", None) or script_path  # (-m: the module's file)
    if is_notebook(script_path):
        session["config"].setdefault("notes", []).append(NOTEBOOK_NOTE)
    try:  # back where `run` started (the history, relative paths in the notices)
        os.chdir(start_dir)
    except OSError:
        pass
    if dist is not None:
        session["environment"].update(rank_environment(dist))
        session["config"]["notes"] = [
            f"rank {dist[0]} of {dist[1]} (torchrun); each rank's session is in "
            f"{out_root}/rank<r>/",
            *session["config"].get("notes", []),
        ]
    from torchdoctor.reports import REPORT_FORMATS

    children = child_sessions(session)  # (processes the script started, profiled on their own)
    annotate_children(children)  # (their threads and time span: the parent's advice reads them)
    path, said = write_or_keep(session, args.out, script=script_path,
                               reports=() if only_syncs else REPORT_FORMATS)  # fmt: skip
    if said is not None:  # (the folder refused it: kept in a temporary one if it could be)
        print(f"torchdoctor {command}: {said}", file=sys.stderr)
        status = status or 1
    from torchdoctor.collect.sigint import finished

    if finished() and path is not None:  # Ctrl-C while finishing: written; the user wants out
        print(interrupted(command, os.path.dirname(path), since=started), file=sys.stderr)
        return status or 130
    if (dist is None or dist[0] == 0) and not getattr(args, "quiet", False):
        try:
            print_report(session, args.format, only_syncs=only_syncs,
                         headline=children_headline(session, children))
        except Exception as exc:  # the script's exit code and the session on disk stand
            kept = f"; the session is in {path}" if path is not None else ""
            print(f"torchdoctor {command}: the report could not be printed ({type(exc).__name__}: "
                  f"{exc}){kept}: `torchdoctor report {path or 'OUT/session.json'}` tries again; "
                  "please report this with the session file", file=sys.stderr)  # fmt: skip
    notices = run_notices(session) + children_notices(children)
    if path is not None:
        notices.append(f"session written to {shown_path(path, start_dir)}")
        if not only_syncs and (dist is None or dist[0] == 0):
            notices += record_run(session, path, args)
    prefix = "torchdoctor" if dist is None else f"torchdoctor [rank {dist[0]}]"
    for line in notices if not getattr(args, "quiet", False) else ():
        print(f"{prefix}: {line}", file=sys.stderr)
    if dist is not None:
        merge_ranks(session, dist, out_root, started, getattr(args, "process_group_store", None),
                    show=args.format == "text")  # fmt: skip
    elif children:  # mp.spawn'd ranks: compared as torchrun's are
        compare_child_ranks(children, out_root, show=args.format == "text", parent=session)
    return status


def run(args: argparse.Namespace) -> int:
    """`torchdoctor run`: profile SCRIPT, write and print the report; the script's exit code.
    >>> p = argparse.ArgumentParser(); add_arguments(p)
    >>> run(parse_args(p, ["no/such/train.py"]))  # refused before anything runs
    2
    """
    return execute(args, command="run", only_syncs=False)

"""Processes a script starts under `torchdoctor run`, profiled on their own.

A Hogwild trainer (pytorch/examples ``mnist_hogwild``), ``torch.multiprocessing.spawn`` of a
DDP training function, or a hand-made ``mp.Process`` pool trains in child processes while the
script's own process waits in ``join()``. `run` follows them: before each such process starts
(``collect/children.py`` sees ``Process.start``; DataLoader workers are the loader's own, and
the worker loops of process pools are counted, not followed), its
target is replaced by a :class:`ProfiledChild` holding the original target and `run`'s options.
In the child (spawned, forked or forkserver'd: the wrapper pickles with the target) it runs the
target under the same profiler and sync audit `run` uses, with checkpoints, and writes
``OUT/children/<target>-<k>/`` (``session.json``, ``report.md``, ``report.html``): ``k`` counts
the processes of that target in start order (``mp.spawn``'s process index). The parent's
session lists them (``session["children"]``) and `run` prints one line per child. Children
that are the ranks of one process group (``mp.spawn`` of a DDP function) are compared as
`torchrun`'s ranks are: the straggler, time in collectives, who waits for whom
(``OUT/ranks.md``).

Never at the child's expense: if the profiler cannot start, the target runs as it would have;
a profile that cannot be written costs a line on stderr; the target's result, exceptions and
``sys.exit`` code are the child's as before.

Example:
    >>> child = ProfiledChild(print, "/tmp/out/children/print-0", "train.py", {})
    >>> child.label
    'train.py (print #0)'
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchdoctor.session_read import fmt_ms, step_count

#: `run`'s options a child's profiler takes (its step function is the script's, not the child's)
CHILD_OPTIONS = ("warmup", "max_steps", "detail", "detail_window", "detail_period",
                 "detail_period_s", "detail_budget", "no_hot_lines", "thorough",
                 "checkpoint_every")  # fmt: skip


#: the worker loops of process pools (multiprocessing.Pool, ProcessPoolExecutor, a Manager's
#: server): long-lived servers the pool terminates, no training of their own; not followed
POOL_WORKERS = ("multiprocessing.", "concurrent.futures.")


class ProfiledChild:
    """A child process's target, run under `run`'s profiler (see the module docstring).

    Picklable when the target is: it is what a spawned child unpickles and calls.

    Example:
        >>> import pickle, tempfile
        >>> child = ProfiledChild(sorted, tempfile.mkdtemp() + "/sorted-0", "train.py", {})
        >>> pickle.loads(pickle.dumps(child))([3, 1, 2])  # profiled, then the target's result
        [1, 2, 3]
    """

    def __init__(self, target: Any, out: str, script: str, options: dict[str, Any]) -> None:
        self.target = target
        self.out = out
        self.script = script
        self.options = dict(options)
        target, _, index = os.path.basename(out).rpartition("-")  # (OUT/children/<target>-<k>)
        self.label = f"{os.path.basename(script)} ({target} #{index})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            run = self._start()
        except Exception as exc:  # never break the child for its profile
            print(f"torchdoctor: {self.label} runs unprofiled ({type(exc).__name__}: {exc})",
                  file=sys.stderr)  # fmt: skip
            return self.target(*args, **kwargs)
        failure: BaseException | None = None
        try:
            return self.target(*args, **kwargs)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._finish(run, failure)

    def _start(self) -> tuple[Any, ...]:
        from torchdoctor.collect.collectives import CollectiveTimer
        from torchdoctor.collect.syncs import sync_audit
        from torchdoctor.commands.run_session import add_run_fields, make_profiler
        from torchdoctor.commands.run_watch import start_checkpoints

        args = argparse.Namespace(
            out=self.out, script=self.script, step_fn=None, **{
                "warmup": 1, "max_steps": None, "thorough": False, "checkpoint_every": 0.0,
                **self.options})  # fmt: skip
        stale = Path(self.out) / "session.json"
        if stale.exists():  # a previous run's: never passes for this one
            stale.unlink()
        self.siblings = sibling_processes()  # (the others the script started: they share
        profiler = make_profiler(args, full=True, label=self.label)  # the cores)
        audit = sync_audit(thorough=args.thorough)
        collectives = CollectiveTimer()
        profiler.start()
        try:
            audit.__enter__()
            profiler.pace_audit(audit)
            start_checkpoints(profiler, args, lambda session: add_run_fields(session, args, audit))
            collectives.start()
        except BaseException:
            profiler.stop()
            raise
        return args, profiler, audit, collectives

    def _finish(self, run: tuple[Any, ...], failure: BaseException | None) -> None:
        from torchdoctor.commands.run_session import add_run_fields, attach_collectives
        from torchdoctor.reports import write_session

        args, profiler, audit, collectives = run
        try:
            collectives.stop()
            audit.stop()
            clean_exit = isinstance(failure, SystemExit) and failure.code in (0, None)
            if failure is not None and not clean_exit:
                profiler.__exit__(type(failure), failure, failure.__traceback__)
                session = profiler.session
            else:
                session = profiler.stop()
            add_run_fields(session, args, audit)
            attach_collectives(args, collectives, session)
            group = session.get("collectives") or {}
            if group.get("rank") is not None and (group.get("world_size") or 1) > 1:
                # a rank of a process group (mp.spawn of a DDP function): the parent compares
                session["environment"].update(rank=group["rank"], world_size=group["world_size"])
            siblings = max(getattr(self, "siblings", 0), sibling_processes())
            if siblings:  # (the data and contention advice count them: collect cores.py)
                session["environment"]["sibling_processes"] = siblings
            write_session(session, self.out, script=self.script)
        except Exception as exc:
            print(f"torchdoctor: the profile of {self.label} was not written "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr)  # fmt: skip


def sibling_processes(proc: str = "/proc") -> int:
    """How many other processes of this one's parent run the same command line (numbers aside:
    a spawned child's pipe handles differ) now: the other workers a Hogwild script started,
    which share this machine's cores; not its resource tracker. 0 where ``/proc`` is missing.

    Example:
        >>> sibling_processes("/nonexistent")
        0
    """
    def command(pid: str) -> str | None:
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                return re.sub(r"\d+", "#", f.read().decode(errors="replace"))
        except OSError:
            return None

    def parent(pid: str) -> int | None:
        try:
            with open(f"{proc}/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None

    try:
        pids = [p for p in os.listdir(proc) if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return 0
    mine, ppid = command(str(os.getpid())), os.getppid()
    return sum(1 for p in pids if parent(p) == ppid and mine is not None and command(p) == mine)


def follow_children(profiler: Any, args: argparse.Namespace) -> None:
    """Have the processes the script starts profiled into ``args.out/children/`` (absolute).

    Example:
        >>> import multiprocessing, torch
        >>> from torchdoctor.collect.profiler import Profiler
        >>> with Profiler(torch.nn.Linear(2, 2), syncs=False) as prof:
        ...     follow_children(prof, argparse.Namespace(out="/tmp/o", script="t.py"))
        ...     worker = multiprocessing.Process(target=print)
        ...     prof.state.children.follow(worker, "print", 0)
        '/tmp/o/children/print-0'
        >>> type(worker._target).__name__
        'ProfiledChild'
    """
    watch = getattr(profiler.state, "children", None)
    if watch is None:
        return
    options = {name: getattr(args, name) for name in CHILD_OPTIONS if hasattr(args, name)}
    script = getattr(args, "script_path", None) or os.path.abspath(args.script)
    root = os.path.join(os.path.abspath(args.out), "children")

    def follow(process: Any, name: str, index: int) -> str | None:
        target = getattr(process, "_target", None)
        if target is None or isinstance(target, ProfiledChild):
            return None
        if str(getattr(target, "__module__", "")).startswith(POOL_WORKERS):
            return None  # a pool's worker loop (terminated, not returned from): counted only
        out = os.path.join(root, f"{_safe(name)}-{index}")
        process._target = ProfiledChild(target, out, script, options)
        return out

    watch.follow = follow
    watch.relaunch = relaunch_command(script, getattr(args, "module", None), root, options)


def relaunch_command(
    script: str, module: str | None, root: str, options: Mapping[str, Any]
) -> Any:
    """The ``relaunch`` of :class:`~torchdoctor.collect.children.ChildProcesses`: a command
    that runs the script itself again (``[python, script, ...]``, ``[python, -m, module,
    ...]``: Lightning's DDP launcher starts ranks 1..n so) runs under ``torchdoctor run``
    instead, into ``root/<script>-<k>`` (``k``: the ``LOCAL_RANK`` it is given, else a count).

    Example:
        >>> relaunch = relaunch_command("/w/train.py", None, "/o/children", {"warmup": 2})
        >>> argv, name, index, out = relaunch(["python", "/w/train.py", "--lr", "1"],
        ...                                   {"LOCAL_RANK": "1"})
        >>> argv[1:7], argv[-4:], out
        (['-m', 'torchdoctor', 'run', '--no-history', '--quiet', '--out'], ['--', '/w/train.py', '--lr', '1'], '/o/children/train-1')
        >>> relaunch(["python", "/w/other.py"], None) is None
        True
    """
    counts: dict[str, int] = {}
    name = _safe(module or os.path.splitext(os.path.basename(script))[0])

    def relaunch(argv: list, env: Any) -> tuple[list, str, int, str] | None:
        if len(argv) < 2 or os.path.basename(str(argv[0])).split(".")[0] not in _PYTHONS:
            return None
        rest = [str(a) for a in argv[1:]]
        if module is not None and rest[:2] == ["-m", module]:
            target, tail = ["-m", module], rest[2:]
        elif os.path.abspath(rest[0]) == script:
            target, tail = [script], rest[1:]
        else:
            return None
        environ = os.environ if env is None else env
        rank = str(environ.get("LOCAL_RANK", ""))
        index = int(rank) if rank.isdigit() else counts.get(name, 0)
        counts[name] = index + 1
        out = os.path.join(root, f"{name}-{index}")
        command = [str(argv[0]), "-m", "torchdoctor", "run", "--no-history", "--quiet",
                   "--out", out]  # fmt: skip  (the parent says where its report is)
        for option, value in options.items():
            flag = "--" + option.replace("_", "-")
            if value is True:
                command.append(flag)
            elif value not in (None, False):
                command += [flag, str(value)]
        return [*command, "--", *target, *tail], name, index, out

    return relaunch


#: executables that are a Python interpreter (``python``, ``python3``, ``python3.11``)
_PYTHONS = ("python", "python3")


def child_sessions(session: Any) -> list[tuple[Mapping[str, Any], Any]]:
    """Each followed child with its session as written (None when there is none to read).

    Example:
        >>> child_sessions({"children": [{"name": "train", "index": 0, "out": "/nowhere"}]})
        [({'name': 'train', 'index': 0, 'out': '/nowhere'}, None)]
    """
    from torchdoctor.session import Session

    found = []
    for child in session.get("children") or ():
        try:
            loaded = Session.load(Path(str(child.get("out"))) / "session.json")
        except (OSError, ValueError):
            loaded = None
        found.append((child, loaded))
    return found


def annotate_children(children: list[tuple[Mapping[str, Any], Any]]) -> None:
    """Add to each followed child's entry (``session["children"]``, in place) what the parent's
    advice reads of it: its intra-op ``threads`` and ``ended_at`` (when its session was
    written), beside the ``started_at`` recorded at its start (``collect/children.py``): the
    processes that ran at the same time, and their threads on the machine's cores
    (``analyze/advice/cpu_threads.py``).

    Example:
        >>> entry = {"name": "train", "index": 0, "out": "/nowhere", "started_at": 1.0}
        >>> annotate_children([(entry, {"environment": {"threads": 2}})]); entry["threads"]
        2
    """
    for child, data in children:
        if data is None or not isinstance(child, dict):
            continue
        threads = (data.get("environment") or {}).get("threads")
        if isinstance(threads, int):
            child["threads"] = threads
        try:
            child["ended_at"] = (Path(str(child.get("out"))) / "session.json").stat().st_mtime
        except OSError:
            pass


def children_notices(children: list[tuple[Mapping[str, Any], Any]]) -> list[str]:
    """One line per followed child (:func:`child_sessions`): its steps and step time, where
    its report is.

    Example:
        >>> children_notices([({"name": "train", "index": 0, "out": "/nowhere"}, None)])
        ['child process train #0: no profile written (it ended before its first step, or was killed before its first checkpoint)']
    """
    lines = []
    for child, data in children:
        where = Path(str(child.get("out")))
        who = f"child process {child.get('name')} #{child.get('index')}"
        if data is None:
            lines.append(f"{who}: no profile written (it ended before its first step, or was "
                         "killed before its first checkpoint)")  # fmt: skip
            continue
        steps = len(data.get("steps") or ())
        median = (data.get("step_ms") or {}).get("median")
        timing = f", {fmt_ms(median)} per step (median)" if steps and median else ""
        report = where / "report.md"
        lines.append(f"{who}: {steps} step(s){timing}; "
                     f"{report if report.exists() else where / 'session.json'}")  # fmt: skip
    return lines


def children_headline(session: Any, children: list[tuple[Mapping[str, Any], Any]]) -> str | None:
    """A line to print before the main process's report when its followed children did most of
    the run's work (steps x median step, against the main process's profiled steps): a Hogwild
    script trains in its children while the main process waits and then tests, and the
    report of that test loop alone would read as the run's; else None.

    Example:
        >>> child = ({"name": "train", "index": 0, "out": "/c"},
        ...          {"steps": [{}] * 99, "step_ms": {"median": 22.0}})
        >>> main = {"steps": [{}] * 30, "step_ms": {"median": 6.5}}
        >>> children_headline(main, [child])[:72]
        "most of this run's work ran in 1 child process(es): train #0 99 steps of"
    """
    def work(data: Any) -> float:
        steps = step_count(data) if data else 0
        return steps * float(((data or {}).get("step_ms") or {}).get("median") or 0.0)

    theirs = [(child, data, work(data)) for child, data in children if data]
    total = sum(ms for _, _, ms in theirs)
    # (no step boundary in the main process: its one "step" is the wait in join())
    whole = (session.get("config") or {}).get("step_boundary") == "whole_run"
    own = 0.0 if whole else work(session)
    if not theirs or total <= own:
        return None
    parts = ", ".join(
        f"{child.get('name')} #{child.get('index')} {step_count(data)} steps of "
        f"{fmt_ms((data.get('step_ms') or {}).get('median'))}" for child, data, _ in theirs[:4]
    ) + (f" and {len(theirs) - 4} more" if len(theirs) > 4 else "")
    return (
        f"most of this run's work ran in {len(theirs)} child process(es): {parts}"
        + (f" ({total / 1e3:.3g} s of steps against this process's {own / 1e3:.3g} s)"
           if own else "") + "; their reports are listed at the end. The report below is the "
        "main process's own."
    )


def compare_child_ranks(
    children: list[tuple[Mapping[str, Any], Any]], out: str, *, show: bool, parent: Any = None
) -> dict[str, Any] | None:
    """When the followed children were the ranks of one process group (``mp.spawn`` of a DDP
    function; or, with the ``parent``'s own session as rank 0, the ranks Lightning's DDP
    launcher started again from the script), compare them as `torchrun` ranks are (the
    straggler, time in collectives, who waits for whom): printed (``show``), written to
    ``out/ranks.md`` and ``ranks.json``. None when fewer than two sessions carry a rank of the
    same world.

    Example:
        >>> compare_child_ranks([], "/nowhere", show=False) is None
        True
    """
    from torchdoctor.commands.ranks import show_rank_comparison

    by_world: dict[int, dict[int, Any]] = {}
    sessions = [loaded for _, loaded in children] + ([parent] if parent is not None else [])
    for loaded in sessions:
        if loaded is None:
            continue
        environment = loaded.get("environment") or {}
        group = loaded.get("collectives") or {}  # (a process group the script made itself)
        rank = environment.get("rank", group.get("rank"))
        world = environment.get("world_size", group.get("world_size"))
        if isinstance(rank, int) and isinstance(world, int) and world > 1:
            if rank not in by_world.setdefault(world, {}):
                environment.update(rank=rank, world_size=world)  # (as the comparison reads)
                by_world[world][rank] = loaded
    if not by_world:
        return None
    world, ranks = max(by_world.items(), key=lambda item: len(item[1]))
    if len(ranks) < 2:
        return None
    if len(ranks) < world:
        print(f"torchdoctor: {len(ranks)} of {world} ranks' sessions were written by the "
              "child processes; the others are named missing", file=sys.stderr)  # fmt: skip
    return show_rank_comparison([ranks[r] for r in sorted(ranks)], out, show=show)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_") or "process"

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
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

HELP = "compare the per-rank sessions of a torchrun run (torchdoctor run) and name the straggler"


def distributed_rank(environ: Any = None) -> tuple[int, int] | None:
    """``(rank, world_size)`` when launched by torchrun (``RANK``/``WORLD_SIZE``), else None.

    Example:
        >>> distributed_rank({"RANK": "1", "WORLD_SIZE": "4"})
        (1, 4)
        >>> distributed_rank({}) is None
        True
    """
    environ = os.environ if environ is None else environ
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return (rank, world) if world > 1 and 0 <= rank < world else None


def rank_environment(dist: tuple[int, int], environ: Any = None) -> dict[str, Any]:
    """What a torchrun rank's session environment says of it: ``rank``, ``world_size``,
    ``run_id``, and ``local_world_size`` (the ranks on this host, which share its cores: the
    data advice counts them) when torchrun set it.

    Example:
        >>> rank_environment((1, 4), {"LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"})
        {'rank': 1, 'world_size': 4, 'run_id': 'x', 'local_world_size': 2}
    """
    found = {"rank": dist[0], "world_size": dist[1], "run_id": torchrun_run_id(environ)}
    local = local_world_size(environ)
    if local is not None:
        found["local_world_size"] = local
    return found


def local_world_size(environ: Any = None) -> int | None:
    """How many ranks torchrun started on this host (``LOCAL_WORLD_SIZE``), None outside it.

    Example:
        >>> local_world_size({"LOCAL_WORLD_SIZE": "2"}), local_world_size({})
        (2, None)
    """
    environ = os.environ if environ is None else environ
    try:
        local = int(environ["LOCAL_WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return local if local >= 1 else None


def torchrun_run_id(environ: Any = None) -> str | None:
    """The run id torchrun gives every rank of one run (None outside torchrun).

    Example:
        >>> torchrun_run_id({"TORCHELASTIC_RUN_ID": "job-7"}), torchrun_run_id({})
        ('job-7', None)
    """
    run_id = (os.environ if environ is None else environ).get("TORCHELASTIC_RUN_ID")
    return None if run_id in (None, "", "none") else run_id


#: how long rank 0 waits for the other ranks' sessions (seconds; env TORCHDOCTOR_RANK_WAIT_S)
RANK_WAIT_S = 60.0


def _wait_from_environment() -> float:
    """``TORCHDOCTOR_RANK_WAIT_S`` as seconds >= 0; a bad value is reported, the default used
    (the run is over: nothing it measured may be lost over a typo in an environment variable)."""
    text = os.environ.get("TORCHDOCTOR_RANK_WAIT_S")
    if text is None:
        return RANK_WAIT_S
    try:
        value = float(text)
        if value >= 0:
            return value
    except ValueError:
        pass
    print(f"torchdoctor: TORCHDOCTOR_RANK_WAIT_S={text!r} is not a number of seconds >= 0; "
          f"waiting the default {RANK_WAIT_S:.0f} s", file=sys.stderr)  # fmt: skip
    return RANK_WAIT_S


def _rank_sessions(out_root: str, world: int, since: float | None, run_id: str | None) -> dict:
    """The sessions of this run found under ``out_root/rank<r>/`` (stale ones skipped)."""
    from torchdoctor.session import Session

    found = {}
    for rank in range(world):
        path = Path(out_root) / f"rank{rank}" / "session.json"
        try:
            if since is not None and path.stat().st_mtime < since - 5:
                continue
            session = Session.load(path)
        except (OSError, ValueError):
            continue
        if (session.get("config") or {}).get("incomplete"):
            continue  # a checkpoint of a rank still running (collect/checkpoint.py)
        theirs = (session.get("environment") or {}).get("run_id")
        if run_id is not None and theirs is not None and theirs != run_id:
            continue
        found[rank] = session
    return found


def compare_rank_sessions(
    out_root: str,
    world: int,
    *,
    since: float | None = None,
    run_id: str | None = None,
    wait_s: float | None = None,
    show: bool = True,
    fetch: Callable[[], Mapping[int, Any]] | None = None,
) -> dict[str, Any] | None:
    """Wait (up to ``wait_s``) for every rank's session, then print and write the comparison.

    Sessions come from ``out_root/rank<r>/session.json`` and, with ``fetch``, from what it
    returns (the sessions the ranks sent through the process group's store); a session that
    only came through the store is also written to ``out_root/rank<r>/``. Returns the
    comparison (``analyze.ranks.compare_ranks``: missing ranks are named), or None when no
    rank's session is found.

    Example:
        >>> import tempfile
        >>> compare_rank_sessions(tempfile.mkdtemp(), world=2, wait_s=0.0) is None  # no sessions
        True
    """

    if wait_s is None:
        wait_s = _wait_from_environment()
    deadline = time.monotonic() + wait_s
    told = False
    received: dict[int, Any] = {}
    with _sigterm_ends_wait() as stopped:
        while True:
            if fetch is not None:
                received.update(fetch())
            found = {**received, **_rank_sessions(out_root, world, since, run_id)}
            if len(found) >= world or time.monotonic() >= deadline or stopped:
                break
            if not told:
                print(f"torchdoctor: waiting up to {wait_s:.0f} s for the sessions of ranks "
                      f"{sorted(set(range(world)) - set(found))}", file=sys.stderr)  # fmt: skip
                told = True
            time.sleep(0.2)
    if stopped:
        print("torchdoctor: SIGTERM while waiting for the other ranks: comparing the sessions "
              "received so far", file=sys.stderr)  # fmt: skip
    if len(found) < world:
        print(f"torchdoctor: only {len(found)} of {world} ranks' sessions reached rank 0 (from "
              f"{out_root} or the process group's store); the others are named missing",
              file=sys.stderr)  # fmt: skip
    if not found:
        return None
    _keep_received(out_root, received, found)
    sessions = [found[r] for r in sorted(found)]
    for session in sessions:
        session["environment"].setdefault("world_size", world)
    return show_rank_comparison(sessions, out_root, show=show)


def show_rank_comparison(sessions: list[Any], out_root: str, *, show: bool) -> dict[str, Any]:
    """Compare the ranks' sessions, print it (``show``; else the verdict on stderr) and write
    ``out_root/ranks.md`` and ``ranks.json``; returns the comparison.

    Example:
        >>> import tempfile
        >>> from torchdoctor.session import Session
        >>> sessions = [Session.new(label="train") for _ in range(2)]
        >>> for rank, s in enumerate(sessions): s["environment"].update(rank=rank, world_size=2)
        >>> out = tempfile.mkdtemp()
        >>> sorted(show_rank_comparison(sessions, out, show=False))[:2]  # (the verdict: stderr)
        ['advice', 'communication']
        >>> sorted(p.name for p in Path(out).iterdir())
        ['ranks.json', 'ranks.md']
    """
    from torchdoctor.analyze.ranks import compare_ranks
    from torchdoctor.render.ranks import render_ranks_markdown, render_ranks_text

    result = compare_ranks(sessions)
    if show:
        print(render_ranks_text(result), end="")
    else:
        print(f"torchdoctor: {result['verdict']}", file=sys.stderr)
    try:
        Path(out_root, "ranks.md").write_text(render_ranks_markdown(result))
        Path(out_root, "ranks.json").write_text(json.dumps(result, indent=1, default=str))
    except OSError as exc:
        print(f"torchdoctor: could not write the rank comparison: {exc}", file=sys.stderr)
    return result


@contextlib.contextmanager
def _sigterm_ends_wait() -> Iterator[list[bool]]:
    """While rank 0 waits: SIGTERM (torchrun stopping the workers because a rank failed) ends
    the wait instead of the process, so the sessions received so far are still compared."""
    stopped: list[bool] = []
    previous = None
    try:
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    except (ValueError, OSError):  # no signals here
        previous = None
    try:
        yield stopped
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _keep_received(out_root: str, received: Mapping[int, Any], found: dict) -> None:
    """Write each session that only came through the store to ``out_root/rank<r>/``."""
    from torchdoctor.session import Session

    for rank, data in received.items():
        if isinstance(found.get(rank), Session):  # its file is here too (a shared folder)
            continue
        path = Path(out_root) / f"rank{rank}" / "session.json"
        try:
            found[rank] = Session.from_dict(data)
            if not path.exists():
                found[rank].save(path)
        except (OSError, ValueError, TypeError) as exc:
            print(f"torchdoctor: rank {rank}'s session could not be kept in {path}: {exc}",
                  file=sys.stderr)  # fmt: skip


def merge_ranks(
    session: Any, dist: tuple[int, int], out_root: str, started: float, store: Any, *, show: bool
) -> dict[str, Any] | None:
    """End of a torchrun rank: send the session to rank 0 through the store; rank 0 gathers
    the ranks' sessions (store first, files as the fallback) and prints their comparison.

    Example:
        >>> from torchdoctor.session import Session
        >>> merge_ranks(Session.new(with_environment=False), (1, 2), "out", 0.0, None,
        ...             show=False) is None  # rank 1 without a store: its files are all
        True
    """
    from torchdoctor.collect.rank_merge import fetch_sessions, publish_session, run_key

    rank, world = dist
    key = run_key()
    if rank != 0:
        if store is not None and not publish_session(store, rank, session.to_dict(), run_key=key):
            print(f"torchdoctor [rank {rank}]: the process group's store did not answer; rank 0 "
                  f"can only read this rank's session from {out_root}/rank{rank}/ (a shared "
                  "folder)", file=sys.stderr)  # fmt: skip
        return None
    fetch = None
    if store is not None:
        fetch = lambda: fetch_sessions(store, world, run_key=key, skip=(0,))  # noqa: E731
    return compare_rank_sessions(out_root, world, since=started, run_id=torchrun_run_id(),
                                 show=show, fetch=fetch)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``torchdoctor ranks``.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="torchdoctor ranks")
        >>> add_arguments(parser)
        >>> parser.parse_args([]).out, parser.parse_args(["prof"]).out
        ('torchdoctor-out', 'prof')
    """
    parser.add_argument(
        "out", metavar="DIR", nargs="?", default="torchdoctor-out",
        help="the --out directory of the run, holding rank<r>/session.json (default: "
        "./torchdoctor-out)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Compare the per-rank sessions under the directory; 2 with fewer than two of them.

    Example:
        >>> import argparse, tempfile
        >>> run(argparse.Namespace(out=tempfile.mkdtemp()))
        2
    """
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

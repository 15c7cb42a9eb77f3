"""What `run` does while the script runs: checkpoints of the session (also at ``os._exit``)
and the ``--live`` view.

Both are step listeners of the profiler (called at step boundaries): crash-safe checkpoints of
``OUT/session.json`` (``collect/checkpoint.py``) and the one-screen summary on stderr
(``collect/live.py``).

Example:
    >>> import argparse
    >>> start_live(None, argparse.Namespace(live=False), None) is None
    True
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def start_checkpoints(
    profiler: Any, args: argparse.Namespace, complete: Callable[[Any], None]
) -> Any:
    """Write ``OUT/session.json`` now (this run's, marked incomplete: a previous run's file
    never passes for this one) and then at the first step boundary after every
    ``--checkpoint-every`` seconds; ``complete(session)`` adds what `run` adds to the final
    session (its sync records). Returns the Checkpointer, or None when off (0).

    Example:
        >>> import json, tempfile, torch
        >>> from torchdoctor.collect.profiler import Profiler
        >>> args = argparse.Namespace(checkpoint_every=30.0, out=tempfile.mkdtemp())
        >>> with Profiler(torch.nn.Linear(2, 2), syncs=False) as prof:
        ...     writer = start_checkpoints(prof, args, lambda session: None)
        ...     written = json.loads((Path(args.out) / "session.json").read_text())
        >>> len(written["steps"])  # written at once, before the first step
        0
        >>> start_checkpoints(prof, argparse.Namespace(checkpoint_every=0), print) is None  # off
        True
    """
    every = getattr(args, "checkpoint_every", 0.0) or 0.0
    if every <= 0:
        return None
    from torchdoctor.collect.checkpoint import Checkpointer

    def build() -> Any:
        session = profiler.snapshot()
        complete(session)
        return session

    writer = Checkpointer(Path(args.out) / "session.json", every, build)
    writer.write(steps=0)
    profiler.add_step_listener(lambda p: writer.at_step(p.steps_recorded))
    return writer


def start_live(profiler: Any, args: argparse.Namespace, audit: Any) -> Any:
    """``--live``: open the summary on stderr and refresh it at step boundaries; None when not
    asked for, or (with a notice) when stderr is not a terminal.

    Example:
        >>> import torch
        >>> from torchdoctor.collect.profiler import Profiler
        >>> with Profiler(torch.nn.Linear(2, 2), syncs=False) as prof:  # stderr is no terminal here
        ...     view = start_live(prof, argparse.Namespace(live=True), None)
        >>> view is None
        True
    """
    if not getattr(args, "live", False):
        return None
    from torchdoctor.collect.live import LiveView

    view = LiveView(audit)
    if not view.enabled:
        print("torchdoctor: --live needs stderr on a terminal; the live view is off",
              file=sys.stderr)  # fmt: skip
        return None
    view.start()
    profiler.add_step_listener(view)
    return view


def checkpoint_at_hard_exit(profiler: Any, writer: Any) -> Callable[[], None]:
    """While the script runs, ``os._exit`` (which skips every ``finally`` and atexit handler:
    the report would be lost) first writes a checkpoint of what was measured. Only in this
    process: forked DataLoader workers end with ``os._exit`` too. Returns the undo.

    Example:
        >>> undo = checkpoint_at_hard_exit(None, None)  # checkpoints off: nothing to write
        >>> undo()
    """
    if writer is None:
        return lambda: None
    real_exit, pid = os._exit, os.getpid()

    def hard_exit(code: int) -> None:
        if os.getpid() == pid:
            try:
                writer.write(steps=profiler.steps_recorded)
                print(f"torchdoctor: the script called os._exit({code}), which skips the report: "
                      f"what was measured until then is in {writer.path}; show it with "
                      f"`torchdoctor report {writer.path}`", file=sys.stderr)  # fmt: skip
            except BaseException:  # never keep the process from exiting
                pass
        real_exit(code)

    os._exit = hard_exit

    def restore() -> None:
        if os._exit is hard_exit:
            os._exit = real_exit

    return restore

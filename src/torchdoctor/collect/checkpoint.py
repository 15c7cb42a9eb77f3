"""Crash-safe checkpoints: the session so far, written atomically on a schedule.

A run killed with SIGKILL (the OOM killer, a preempted node, a segfault) runs no handler, so
its session must already be on disk. A :class:`Checkpointer` is called at every step boundary
(no thread: a step longer than the period checkpoints at its end); once ``every`` seconds have
passed since the last write it builds the session from the profiler's current data (the same
function the profiler uses when it stops), marks it incomplete (``config.incomplete``,
``config.checkpoint``, a first note naming the steps it holds) and writes it atomically: a
temporary file in the same folder, flushed to disk (``fsync``), then ``os.replace``. A reader
(or a crash) therefore sees the previous checkpoint or the new one, never half a file. The
final session written at a normal end replaces it.

What is lost on SIGKILL: the steps after the last checkpoint (at most ``every`` seconds of
them, plus the step running then). Writing never breaks the run: an error (disk full) is
reported once on stderr and the next period tries again.

Example:
    >>> import os, tempfile
    >>> from torchdoctor.session import Session
    >>> path = os.path.join(tempfile.mkdtemp(), "session.json")
    >>> writer = Checkpointer(path, 60.0, lambda: Session.new("demo", with_environment=False))
    >>> writer.write(steps=3)
    True
    >>> Session.load(path)["config"]["incomplete"]
    True
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchdoctor.session_read import fmt_count

#: default period of ``--checkpoint-every`` (seconds)
DEFAULT_EVERY_S = 30.0


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` so that a crash at any moment leaves the old file or the new
    one: a temporary file in the same folder, ``fsync``, ``os.replace``, then ``fsync`` of the
    folder (so the rename itself survives a power loss where the OS allows it).

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "a.json")
        >>> write_atomic(target, "{}").read_text()
        '{}'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # what a plain open(path, "w") gives, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable (not possible on every platform: best effort)
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:
        pass
    return target


def mark_incomplete(session: Any, *, steps: int, elapsed_s: float) -> None:
    """Mark a session built while the run goes on as an incomplete checkpoint.

    Example:
        >>> from torchdoctor.session import Session
        >>> s = Session.new("x", with_environment=False)
        >>> mark_incomplete(s, steps=4, elapsed_s=12.0)
        >>> s["config"]["checkpoint"]["steps"], s["config"]["notes"][0][:10]
        (4, 'incomplete')
    """
    config = session["config"]
    held = f"profiled steps 0-{steps - 1} ({steps} steps)" if steps else "no profiled step yet"
    config["incomplete"] = True
    config["checkpoint"] = {
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed_s, 3),
        "steps": steps,
    }
    note = (
        f"incomplete: a checkpoint written {fmt_count(elapsed_s)} s into the run, holding {held}; the "
        "run had not ended then (it was still running, or was killed before writing its final "
        "session)"
    )
    config["notes"] = [note, *(config.get("notes") or [])]


class Checkpointer:
    """Write ``build()`` (the session so far) to ``path`` at most every ``every`` seconds.

    Call :meth:`at_step` at each step boundary; :meth:`write` forces one now.

    Example:
        >>> import os, tempfile
        >>> from torchdoctor.session import Session
        >>> path = os.path.join(tempfile.mkdtemp(), "s.json")
        >>> writer = Checkpointer(path, 3600.0, lambda: Session.new("x", with_environment=False))
        >>> writer.at_step(1), os.path.exists(path)  # the period has not passed yet
        (False, False)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        every: float,
        build: Callable[[], Any],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not every > 0:
            raise ValueError(
                f"checkpoint period must be > 0 seconds, got {every!r}; use 0 on the command "
                "line (--checkpoint-every 0) to turn checkpoints off"
            )
        self.path = Path(path)
        self.every = float(every)
        self.build = build
        self.clock = clock
        self.started = self.last = clock()
        self.written = 0
        self._warned = False

    def at_step(self, steps: int) -> bool:
        """A step boundary (``steps`` profiled so far): write if the period has passed."""
        if self.clock() - self.last < self.every:
            return False
        return self.write(steps=steps)

    def write(self, *, steps: int) -> bool:
        """Build, mark and write the checkpoint now; False (and one warning) on failure."""
        self.last = self.clock()
        try:
            session = self.build()
            mark_incomplete(session, steps=steps, elapsed_s=self.last - self.started)
            write_atomic(self.path, session.to_json() + "\n")
        except Exception as exc:  # never break the user's run over a checkpoint
            if not self._warned:
                self._warned = True
                print(f"torchdoctor: checkpoint not written to {self.path} ({type(exc).__name__}:"
                      f" {exc}); will retry every {self.every:g} s", file=sys.stderr)  # fmt: skip
            return False
        self.written += 1
        return True

    def finish(self, session: Any) -> bool:
        """The run ended: replace the checkpoint with the final session (False, and a warning
        on stderr, when it cannot be written: the session is still returned to the caller)."""
        try:
            write_atomic(self.path, session.to_json() + "\n")
        except Exception as exc:
            print(f"torchdoctor: final session not written to {self.path} ({type(exc).__name__}:"
                  f" {exc}); the file there is the last checkpoint", file=sys.stderr)  # fmt: skip
            return False
        return True

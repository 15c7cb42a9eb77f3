"""Where the host thread's time went in a step: on a core, waiting for one, or blocked; and
the process's time in the kernel and its minor page faults.

A step's wall time is the profiled thread's time on a CPU core plus the time it was ready to run
while no core was free (other processes or threads had them: CPU contention) plus the time it
was not runnable at all (blocked: disk or network I/O, a sleep, a lock, a queue fed by worker
processes, a blocking device wait). The first is the thread's CPU time
(``time.thread_time_ns``, exact); Linux keeps the second per thread in
``/proc/thread-self/schedstat`` (run ns, run-queue wait ns, time slices: the scheduler's
``sched_info``; its run ns lag by up to a scheduler tick for the running thread, its wait is
complete: a wait ends when the thread gets a core). Both cost about 1 us (one ``pread`` of the
open file), so every step, light ones included, records them; without the file (not Linux, an
emulated ``/proc``) the wait is unknown.

Measured on this 2-core host (a Python loop of 0.44 s): alone, 0.07 ms waited; with three busy
processes beside it, the same loop took 0.95 s, of which 0.60 s waiting for a core; a 0.1 s
sleep: 1 ms on a core, 3 ms waiting, the rest blocked. So the step figures tell a step made
slow by the machine (contention) from one made slow by its own work, and both from one that
waited on something outside the CPU.

The process's kernel (system) and user CPU time and its minor page faults, all its threads
together (torch's intra-op threads fault too), come from ``resource.getrusage(RUSAGE_SELF)``
(``ru_stime``, ``ru_utime``, ``ru_minflt``) at the same two reads: ``sys_ms``, ``user_ms`` and
``minor_faults`` per step (the user time tells the kernel's share of the process's CPU time
when several threads work: their CPU time adds up past the wall time). One call costs
about 1 us (measured here: 1.0 us in a bare interpreter, 0.6 us with torch's 16 threads
started); a step's :meth:`ThreadTimes.read` and :meth:`ThreadTimes.since` went from 2.9-3.1 to
4.7-5.1 us with them (+1.6 to 2.2 us per step, this busy 2-core host), so every step records
them too; without ``resource`` (Windows) they are absent. A
step that allocates large tensors gets them from glibc as fresh mmaps, whose pages the
kernel zero-fills at first touch (one minor fault per 4 KiB page): build-nanogpt's 100 MB
logits buffers made half of its CPU step kernel time (analyze/advice/page_faults.py).

Example:
    >>> clock = ThreadTimes()
    >>> begin = clock.read()
    >>> total = sum(range(200_000))
    >>> figures = clock.since(begin)
    >>> figures["cpu_ms"] > 0, set(figures) <= set(HOST_KEYS)
    (True, True)
    >>> clock.close()
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

try:  # (not on Windows: there the process's kernel time and faults are absent)
    import resource

    _getrusage: Any = resource.getrusage
    _RUSAGE_SELF = resource.RUSAGE_SELF
except ImportError:  # pragma: no cover
    _getrusage = None
    _RUSAGE_SELF = 0

#: the per-step figures a step's summary and ``session["steps"]`` entry carry
HOST_KEYS = ("cpu_ms", "cpu_wait_ms", "sys_ms", "user_ms", "minor_faults")
#: where the kernel keeps the calling thread's scheduler figures (Linux)
SCHEDSTAT = "/proc/thread-self/schedstat"


class ThreadTimes:
    """The run and run-queue wait nanoseconds of the thread that made it (see the module
    docstring); :meth:`read` in any other thread returns None.

    Example:
        >>> clock = ThreadTimes()
        >>> a = clock.read(); b = clock.read()
        >>> b[0] >= a[0], clock.thread == threading.get_native_id()
        (True, True)
        >>> clock.close()
    """

    def __init__(self, path: str = SCHEDSTAT) -> None:
        self.thread = threading.get_native_id()
        self._fd: int | None = None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            fields = os.pread(fd, 128, 0).split()
            int(fields[0]), int(fields[1])
        except (OSError, IndexError, ValueError):  # (an emulated /proc without the figures)
            os.close(fd)
            return
        self._fd = fd

    @property
    def knows_wait(self) -> bool:
        """Whether the run-queue wait is measured (Linux schedstat), not only the CPU time."""
        return self._fd is not None

    def read(self) -> tuple[Any, ...] | None:
        """(ns on a core, ns waiting for one or None when unknown) so far, of this thread, then
        the process's kernel seconds, user seconds and minor page faults (None without
        ``resource``); None when called from another thread than the one that made this
        object (its figures would be another thread's). The thread's time is read first, next
        to the caller's wall clock reading."""
        if threading.get_native_id() != self.thread:
            return None
        thread_ns, wait, fd = time.thread_time_ns(), None, self._fd
        if fd is not None:
            try:
                wait = int(os.pread(fd, 128, 0).split()[1])
            except (OSError, ValueError, IndexError):
                self.close()
        usage = _getrusage(_RUSAGE_SELF) if _getrusage is not None else None
        if usage is None:
            return thread_ns, wait, None, None, None
        return thread_ns, wait, usage.ru_stime, usage.ru_utime, usage.ru_minflt

    def since(self, begin: tuple[int, int | None] | None) -> dict[str, float]:
        """The step's ``cpu_ms``, ``cpu_wait_ms``, ``sys_ms``, ``user_ms`` and ``minor_faults`` since
        ``begin`` (a :meth:`read`); empty when either end is unknown (another thread)."""
        end = self.read()
        return host_figures(begin, end)

    def close(self) -> None:
        """Close the file (reads after this fall back to the thread's CPU time)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def host_figures(begin: Any, end: Any) -> dict[str, float]:
    """``{"cpu_ms", "cpu_wait_ms", "sys_ms", "user_ms", "minor_faults"}`` between two
    :meth:`ThreadTimes.read` results (the wait, the kernel time and the faults only where both
    ends measured them; nothing when either is None).

    Example:
        >>> host_figures((1_000_000, 0), (3_500_000, 2_000_000))
        {'cpu_ms': 2.5, 'cpu_wait_ms': 2.0}
        >>> host_figures((1_000_000, None, 0.25, 1.0, 100), (3_000_000, None, 0.5, 1.5, 2_100))
        {'cpu_ms': 2.0, 'sys_ms': 250.0, 'user_ms': 500.0, 'minor_faults': 2000}
        >>> host_figures(None, (1, 1))
        {}
    """
    if begin is None or end is None:
        return {}
    out: dict[str, float] = {"cpu_ms": max(0, end[0] - begin[0]) / 1e6}
    if begin[1] is not None and end[1] is not None:
        out["cpu_wait_ms"] = max(0, end[1] - begin[1]) / 1e6
    if len(begin) > 4 and len(end) > 4 and begin[2] is not None and end[2] is not None:
        out["sys_ms"] = max(0.0, end[2] - begin[2]) * 1e3
        out["user_ms"] = max(0.0, end[3] - begin[3]) * 1e3
        out["minor_faults"] = max(0, end[4] - begin[4])
    return out

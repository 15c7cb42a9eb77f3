"""Rule ``cpu-contention``: the profiled thread waited for a CPU core; and where long steps'
extra time went (on a core, waiting for one, blocked).

Every step records how much of its wall time the profiled thread spent on a core
(``cpu_ms``) and ready to run with no core free (``cpu_wait_ms``, the kernel's run-queue
wait: ``collect/host_time.py``); the rest it was blocked (I/O, a sleep, a lock, a queue fed
by other processes). A thread that waits for a core is slowed by the machine, not by its own
code: other processes (a second job, a notebook kernel, a compile) or the script's own
processes (DataLoader workers beside torch's threads) hold the cores. Every figure of such a
run is inflated, and a long step made long by waiting is no work to remove from the loop.

Example:
    >>> steps = [{"index": i, "wall_ms": 10.0, "cpu_ms": 6.0, "cpu_wait_ms": 4.0,
    ...           "phases": {"forward": 10.0}} for i in range(20)]
    >>> advice = cpu_contention({"steps": steps, "environment": {"threads": 2, "cpus": 2}})
    >>> advice[0].title
    "The machine was busy: the profiled thread waited for a CPU core 40% of the steps' time"
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.base import Advice, advice_step_ms, fmt_ms
from torchdoctor.analyze.advice.cores import local_processes
from torchdoctor.session_read import (
    HostSplit,
    contention_share,
    host_split,
    host_steps,
    wait_ms,
)

#: a long step's extra time is the machine's (or outside the CPU) past this share of it
OFF_CORE_SHARE = 0.6


def extra_split(
    long: Sequence[Mapping[str, Any]], typical: Sequence[Mapping[str, Any]]
) -> HostSplit | None:
    """The long steps' time over the typical step's, split as :class:`~torchdoctor.session_read.HostSplit` (each part over
    its own median in ``typical``); None without the figures.

    Example:
        >>> typical = [{"wall_ms": 10.0, "cpu_ms": 9.0, "cpu_wait_ms": 0.0}] * 9
        >>> long = [{"wall_ms": 50.0, "cpu_ms": 12.0, "cpu_wait_ms": 30.0}]
        >>> extra_split(long, typical)
        HostSplit(wall_ms=40.0, cpu_ms=3.0, wait_ms=30.0)
    """
    long, typical = host_steps(long), host_steps(typical)
    if not long or len(typical) < 5:
        return None

    def over(value: Any) -> float:
        base = statistics.median(value(s) for s in typical)
        return sum(max(0.0, value(s) - base) for s in long)

    return HostSplit(over(lambda s: float(s["wall_ms"])), over(lambda s: float(s["cpu_ms"])),
                     over(wait_ms))  # fmt: skip


def typical_wait_rate(typical: Sequence[Mapping[str, Any]]) -> float:
    """The typical step's share of its time waiting for a core (medians; 0 without figures).

    Example:
        >>> typical_wait_rate([{"wall_ms": 10.0, "cpu_ms": 8.0, "cpu_wait_ms": 2.0}] * 5)
        0.2
    """
    rows = host_steps(typical)
    if not rows:
        return 0.0
    wall = statistics.median(float(s["wall_ms"]) for s in rows)
    return statistics.median(wait_ms(s) for s in rows) / wall if wall > 0 else 0.0


def off_core(extra: HostSplit | None, typical_rate: float = 0.0) -> str | None:
    """``"waiting"`` when the long steps' extra time went to waiting for a core far more than a
    typical step's does (>= 25% of it, and twice the typical step's share: the machine got
    busy then; the thread's time spinning for OpenMP threads that lost their core counts as on
    a core, so the on-core part is no proof of work), ``"blocked"`` when most of it was spent
    off a core and not waiting (I/O, a sleep), else None (their own work).

    Example:
        >>> off_core(HostSplit(40.0, 3.0, 30.0)), off_core(HostSplit(40.0, 2.0, 1.0)), off_core(HostSplit(40.0, 35.0, 0.0))
        ('waiting', 'blocked', None)
        >>> off_core(HostSplit(40.0, 20.0, 20.0)), off_core(HostSplit(40.0, 20.0, 20.0), typical_rate=0.5)
        ('waiting', None)
    """
    if extra is None or extra.wall_ms <= 0.0:
        return None
    rate = extra.wait_ms / extra.wall_ms
    if rate >= 0.25 and rate >= 2.0 * typical_rate:
        return "waiting"
    if extra.cpu_ms < (1.0 - OFF_CORE_SHARE) * extra.wall_ms and extra.blocked_ms >= 0.5 * extra.wall_ms:
        return "blocked"
    return None


def split_evidence(extra: HostSplit) -> str:
    """One line: where the long steps' extra time went.

    Example:
        >>> split_evidence(HostSplit(40.0, 3.0, 30.0))
        "of their extra 40 ms, the profiled thread was on a CPU core 3 ms, ready to run with no core free 30 ms (the kernel's run-queue wait), blocked (not runnable) 7 ms"
    """
    return (
        f"of their extra {fmt_ms(extra.wall_ms)}, the profiled thread was on a CPU core "
        f"{fmt_ms(extra.cpu_ms)}, ready to run with no core free {fmt_ms(extra.wait_ms)} "
        f"(the kernel's run-queue wait), blocked (not runnable) {fmt_ms(extra.blocked_ms)}"
    )


WAITING_FIX = (
    "The long steps waited for CPU cores that other processes held: nothing in the loop to "
    "change. Run on an idle machine, or give this job cores of its own (taskset -c / numactl, "
    "a container's cpuset) and set torch.set_num_threads to that many; then profile again."
)
#: the fix of long steps blocked in backward under DDP: the other ranks, not this code
DDP_WAIT_FIX = (
    "The extra time sits in backward, where DistributedDataParallel waits until every rank's "
    "gradients are reduced: another rank reached its all-reduce late (a straggler with more "
    "work, or a process the machine took off its core). Nothing in this rank's code to change: "
    "compare the ranks (`torchdoctor run` under torchrun writes a ranks table), give them equal "
    "work, and keep other processes off their cores."
)

BLOCKED_FIX = (
    "The long steps' extra time was spent blocked, not computing: writing a checkpoint or "
    "files to slow or network storage, reading data outside the DataLoader, a sleep, a lock, "
    "or waiting for other processes (vectorized environments, a logger). Do that work "
    "asynchronously (a background thread or process for checkpoints and logging) or less "
    "often; `torchdoctor run --detail always` shows which lines they were in."
)


def cpu_contention(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when the profiled thread waited for a core >= 10% of the steps' time.

    Example:
        >>> steps = [{"wall_ms": 10.0, "cpu_ms": 6.0, "cpu_wait_ms": 4.0}] * 8
        >>> [(a.title[-11:], a.estimated_saving_ms) for a in cpu_contention({"steps": steps})]
        [("steps' time", 4.0)]
    """
    share = contention_share(session)
    if share is None:
        return []
    steps = host_steps(session.get("steps") or ())
    total = host_split(steps)
    waited = [s for s in steps if wait_ms(s) > 0.25 * float(s["wall_ms"])]
    evidence = [
        f"in {len(steps):,} steps ({fmt_ms(total.wall_ms)}), the profiled thread was ready to "
        f"run with no core free for {fmt_ms(total.wait_ms)} (the kernel's run-queue wait), "
        f"on a core for {fmt_ms(total.cpu_ms)}, blocked for {fmt_ms(total.blocked_ms)}",
        f"{len(waited):,} of {len(steps):,} steps waited more than a quarter of their time"
        + (": the machine was busy all along" if len(waited) >= 0.8 * len(steps)
           else ": the machine was busy at times (another job started or stopped)"),
    ]  # fmt: skip
    own = _own_processes(session)
    if own:
        evidence.append(own)
    threads = (session.get("environment") or {}).get("threads")
    threads = threads if isinstance(threads, int) else 0
    # the wait's share of the step the advice states savings against (the mean wait per step
    # over a median-based step read 71% beside a 40% headline on a busy run)
    per_step = share * advice_step_ms(session) or total.wait_ms / len(steps)
    return [
        Advice(
            rule="cpu-contention",
            title="The machine was busy: the profiled thread waited for a CPU core "
            f"{100 * share:.0f}% of the steps' time",
            confidence="high",
            evidence=evidence,
            fix="Every time in this report includes that wait, so the step looks slower "
            "than its code is. Find what else holds the cores (top or htop: another training "
            "run, a notebook kernel, a compile) and profile on an idle machine, or give this "
            "job cores of its own (taskset -c / numactl, a container's cpuset) with "
            "torch.set_num_threads set to that many"
            + (" and fewer DataLoader workers" if own else "")
            + "."
            + (f" With {threads} torch threads on a machine where other processes take cores, "
               "one thread taken off its core stalls every op for the others: fewer threads "
               "(torch.set_num_threads, OMP_NUM_THREADS) than free cores is often much faster "
               "here (a T5 fine-tune on 2 cores beside a busy process: 2.4 s a step with 2 "
               "threads, 0.1 s with 1): time a few steps with OMP_NUM_THREADS=1." if threads > 1
               else ""),
            estimated_saving_ms=per_step,
            saving_range_ms=[per_step, per_step],
            heat=min(1.0, share),
            cause="cpu-contention",
        )
    ]


def _own_processes(session: Mapping[str, Any]) -> str | None:
    """A line when the script's own DataLoader workers and torch's threads outnumber the
    usable cores (they take turns with the profiled thread), else None.

    Example:
        >>> env = {"threads": 2, "cpus": 2, "data_loaders": [{"num_workers": 2}]}
        >>> _own_processes({"environment": env})
        "the script's own processes compete for them: 2 DataLoader workers beside torch's 2 threads on 2 usable cores"
        >>> _own_processes({"environment": {"threads": 1, "cpus": 2, "world_size": 4}})[:70]
        "the run's own processes compete for them: 4 ranks on this host, each w"
    """
    environment = session.get("environment") or {}
    cpus, threads = environment.get("cpus"), environment.get("threads")
    workers = max((int(d.get("num_workers") or 0)
                   for d in environment.get("data_loaders") or ()), default=0)  # fmt: skip
    ranks = local_processes(environment)
    if not isinstance(cpus, int) or not isinstance(threads, int) or not (workers or ranks > 1):
        return None
    if ranks * (workers + threads) <= cpus:
        return None
    if ranks > 1:  # (torchrun's ranks on this host: the run's own processes)
        return (f"the run's own processes compete for them: {ranks} ranks on this host, each "
                f"with torch's {threads} thread(s)"
                + (f" and {workers} DataLoader workers" if workers else "")
                + f", on {cpus} usable cores: give each rank {max(1, cpus // ranks)} core(s) "
                "worth of threads and workers")  # fmt: skip
    return (f"the script's own processes compete for them: {workers} DataLoader "
            f"worker{'s' if workers > 1 else ''} beside torch's {threads} "
            f"thread{'s' if threads > 1 else ''} on {cpus} usable cores")  # fmt: skip


def off_core_advice(
    off: str,
    host: Any,
    head: str,
    share: float,
    long: list[Mapping[str, Any]],
    steps: int,
    median: float,
    per_step: float,
    ddp_wait: bool = False,
) -> Advice:
    """The ``periodic-steps`` advice on long steps when much of their extra time was off a core: waiting for one
    (the machine was busy: nothing to save in the loop) or blocked (I/O, a sleep, a lock:
    periodic work done off the CPU, which running it less often or in the background saves).

    Example:
        >>> from torchdoctor.session_read import HostSplit
        >>> long = [{"index": 9, "wall_ms": 50.0}, {"index": 19, "wall_ms": 50.0}]
        >>> a = off_core_advice("waiting", HostSplit(80.0, 5.0, 60.0), "Every 10 steps a step takes 5.0x the median", 20.0, long, 20, 10.0, 4.0)
        >>> a.title, a.cause, a.estimated_saving_ms
        ('Every 10 steps a step takes 5.0x the median: the machine was busy (other processes held the CPU cores) for most of their extra time, 20% of the run', 'cpu-contention', None)
        >>> off_core_advice("waiting", HostSplit(80.0, 50.0, 30.0), "5 steps", 20.0, long, 20, 10.0, 4.0).title[:86]
        '5 steps: the machine was busy (other processes held the CPU cores) for 38% of their ex'
    """
    indices = [int(s.get("index", 0)) for s in long]
    waiting = off == "waiting"
    part = (host.wait_ms if waiting else host.blocked_ms) / host.wall_ms if host.wall_ms > 0 else 0.0
    # (the measured part: off_core calls 25% waiting, twice a typical step's, the machine's)
    most = "most" if part > 0.5 else f"{100 * part:.0f}%"
    shown = ", ".join(str(i) for i in indices[:6]) + (", ..." if len(indices) > 6 else "")
    walls = [float(s["wall_ms"]) for s in long]
    item = Advice(
        rule="periodic-steps",
        title=f"{head}: "
        + ("the machine was busy (other processes held the CPU cores)" if waiting
           else "the profiled thread was blocked (not computing, not waiting for a core)")
        + f" for {most} of their extra time, {share:.0f}% of the run",
        confidence="medium",
        evidence=[
            f"steps {shown} (of {steps}): {fmt_ms(min(walls))} to {fmt_ms(max(walls))} "
            f"against a median step of {fmt_ms(median)}",
            split_evidence(host),
        ],
        fix=WAITING_FIX if waiting else BLOCKED_FIX,
        heat=min(1.0, share / 100.0),
        cause="cpu-contention" if waiting else "periodic-work",
    )  # fmt: skip
    if ddp_wait and off == "blocked":  # (its extra time in backward, under DDP: the all-reduce)
        item.title = (f"{head}: the rank waited in backward for DDP's all-reduce (another rank "
                      f"came late) for {most} of their extra time, {share:.0f}% of the run")
        item.fix, item.cause = DDP_WAIT_FIX, "collectives"
        return item  # (nothing to save in this rank's code)
    if not waiting:  # measured: half of their extra time saved by doing that work half as often
        item.estimated_saving_ms = per_step / 2
        item.saving_range_ms = (per_step / 2, per_step)
    return item

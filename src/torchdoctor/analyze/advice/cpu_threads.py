"""CPU oversubscription: more torch intra-op threads running at once than the process may use
cores.

Each process torch starts sizes its intra-op thread pool to the machine's cores. A Hogwild
trainer (pytorch/examples ``mnist_hogwild``: ``mp.Process`` per worker) or any pool of
training processes started without ``torch.set_num_threads`` therefore runs processes x cores
threads on the cores, and OpenMP threads that wait spin: measured here, ``mnist_hogwild``'s
default two processes on two cores took 12.4 s for one epoch, 7.9 s with one thread each
(BENCHMARKS.md). ``torchrun`` sets ``OMP_NUM_THREADS=1`` for its workers; ``mp.Process`` and
``mp.spawn`` do not. A single process set to more threads than its usable cores (an affinity
mask or a container's CPU set smaller than the machine) is the same case.

Reads ``session["children"]`` (the processes the script started, each with the ``threads`` and
the time span its own profile recorded: ``commands/run_children.py``) and
``environment["threads"]``/``["cpus"]``.

Example:
    >>> children = [{"name": "train", "index": i, "threads": 2, "started_at": 0.0,
    ...              "ended_at": 9.0} for i in range(2)]
    >>> session = {"environment": {"threads": 2, "cpus": 2}, "children": children}
    >>> cpu_oversubscription(session)[0].title
    '2 train processes ran 2 intra-op threads each on 2 cores: give each 1'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.base import Advice


def peak_threads(children: Sequence[Mapping[str, Any]]) -> tuple[int, list[Mapping[str, Any]]]:
    """The most intra-op threads the children ran at one time, and the children running then
    (a child without a time span counts as running with all the others).

    Example:
        >>> peak_threads([{"threads": 2, "started_at": 0, "ended_at": 1},
        ...               {"threads": 2, "started_at": 2, "ended_at": 3}])[0]  # one after the other
        2
    """
    known = [c for c in children if isinstance(c.get("threads"), int) and c["threads"] > 0]
    best: tuple[int, list[Mapping[str, Any]]] = (0, [])
    for child in known:  # the peak is at some child's start
        start = child.get("started_at")
        running = [
            other
            for other in known
            if start is None
            or other.get("started_at") is None
            or other.get("ended_at") is None
            or other["started_at"] <= start <= other["ended_at"]
        ]
        total = sum(int(c["threads"]) for c in running)
        if total > best[0]:
            best = (total, running)
    return best


def cpu_oversubscription(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when the processes the script started (or the script itself) ran more intra-op
    threads at once than there are usable cores (see the module docstring).

    Example:
        >>> cpu_oversubscription({"environment": {"threads": 8, "cpus": 2}})[0].title
        'torch runs 8 intra-op threads on 2 usable cores: set torch.set_num_threads(2)'
        >>> cpu_oversubscription({"environment": {"threads": 2, "cpus": 2}})
        []
    """
    environment = session.get("environment") or {}
    cpus = environment.get("cpus")
    if not isinstance(cpus, int) or cpus < 1 or str(environment.get("device")).startswith("cuda"):
        return []
    total, running = peak_threads(session.get("children") or ())
    if len(running) >= 2 and total > cpus:
        return [_processes(running, total, cpus)]
    threads = environment.get("threads")
    if isinstance(threads, int) and threads > cpus:
        return [
            Advice(
                rule="cpu-oversubscription",
                title=f"torch runs {threads} intra-op threads on {cpus} usable cores: set "
                f"torch.set_num_threads({cpus})",
                confidence="high",
                evidence=[
                    f"torch.get_num_threads() = {threads}; this process may run on {cpus} cores "
                    "(its CPU affinity, capped by its container's CPU quota)",
                    "threads beyond the cores take turns on them, and OpenMP threads that "
                    "wait spin: each parallel op waits for its slowest thread",
                ],
                fix=f"Call torch.set_num_threads({cpus}) (or set OMP_NUM_THREADS={cpus}) before "
                "the first torch op; in a container, use the CPUs it is given, not the host's.",
                code=f"torch.set_num_threads({cpus})",
                heat=1.0 - cpus / threads,
                cause="cpu-threads",
            )
        ]
    return []


def _processes(running: list[Mapping[str, Any]], total: int, cpus: int) -> Advice:
    names = sorted({str(c.get("name") or "?") for c in running})
    count = len(running)
    each = {int(c["threads"]) for c in running}
    per = f"{each.pop()} intra-op threads each" if len(each) == 1 else f"{total} threads in all"
    share = max(1, cpus // count)
    who = f"{count} {names[0]} processes" if len(names) == 1 else f"{count} processes"
    return Advice(
        rule="cpu-oversubscription",
        title=f"{who} ran {per} on {cpus} cores: give each {share}",
        confidence="high",
        evidence=[
            f"{count} processes started by the script ran at the same time "
            f"({', '.join(names)}), {total} torch intra-op threads in all on {cpus} usable cores",
            "each process sizes its thread pool to the whole machine: threads beyond the "
            "cores take turns, and OpenMP threads that wait spin (pytorch/examples "
            "mnist_hogwild, 2 processes on 2 cores: one epoch 12.4 s, 7.9 s with one thread "
            "each)",
            "each process's own report is in the children folder of this run",
        ],
        fix=f"Give each process its share of the cores: call "
        f"torch.set_num_threads({share}) first thing in the function each process runs (or "
        "set OMP_NUM_THREADS before starting them; torchrun sets it to 1 for its workers).",
        code="def train(rank, args, model):\n"
        "    torch.set_num_threads(max(1, os.cpu_count() // args.num_processes))\n"
        "    ...",
        heat=1.0 - cpus / total,
        cause="cpu-threads",
    )

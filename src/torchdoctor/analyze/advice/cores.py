"""The CPU cores a profiled process shares: with torchrun's other ranks on its host, with
its torch threads. The data-loading and contention advice read them (a DataLoader worker per
free core; on a CPU whose cores the ranks' threads already take, workers only compete).

Example:
    >>> cores_per_process({"cpus": 8, "world_size": 2})
    4
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def local_processes(environment: Mapping[str, Any]) -> int:
    """The training processes sharing this host's cores: torchrun's ranks on it
    (``local_world_size``; else ``world_size``, as on one host), a followed child process and
    its ``sibling_processes`` (the other workers of a Hogwild script), else 1.

    Example:
        >>> local_processes({"world_size": 2}), local_processes({"world_size": 8, "local_world_size": 4})
        (2, 4)
        >>> local_processes({"sibling_processes": 1}), local_processes({})
        (2, 1)
    """
    for key in ("local_world_size", "world_size"):
        try:
            count = int(environment.get(key) or 0)
        except (TypeError, ValueError):
            continue
        if count >= 1:
            return count
    siblings = environment.get("sibling_processes")  # (a Hogwild worker's: run_children.py)
    return 1 + siblings if isinstance(siblings, int) and siblings > 0 else 1


def cores_busy_computing(environment: Mapping[str, Any]) -> int | None:
    """The intra-op threads of the model's processes computing on the CPU (this one's, times
    :func:`local_processes`) when they take every core this process may use (then DataLoader
    workers have no idle core to load on), else None.

    Example:
        >>> cores_busy_computing({"device": "cpu", "threads": 2, "cpus": 2})
        2
        >>> cores_busy_computing({"device": "cpu", "threads": 1, "cpus": 2, "world_size": 2})
        2
        >>> cores_busy_computing({"device": "cuda:0", "threads": 2, "cpus": 2}) is None
        True
    """
    device = str(environment.get("device") or "")
    threads, cpus = environment.get("threads"), environment.get("cpus")
    if not device.startswith("cpu") or not threads or not cpus:
        return None
    busy = int(threads) * local_processes(environment)
    return busy if busy >= int(cpus) else None


def cores_per_process(environment: Mapping[str, Any]) -> int | None:
    """The cores this process may use (``cpus``) shared among the ranks on its host: what its
    DataLoader workers can be spread over; None when unknown.

    Example:
        >>> cores_per_process({"cpus": 16, "local_world_size": 4}), cores_per_process({})
        (4, None)
    """
    cpus = environment.get("cpus")
    return max(1, int(cpus) // local_processes(environment)) if cpus else None

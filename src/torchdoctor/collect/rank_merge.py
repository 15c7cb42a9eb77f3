"""Send every rank's session to rank 0 through the process group's store (no shared folder).

At the end of ``torchdoctor run`` under torchrun each rank puts its session (JSON, compressed)
under a key of the default process group's c10d store, the store its ranks rendezvoused
through, kept alive after the script's ``destroy_process_group``. Rank 0 polls for the other
ranks' keys until they are all there or its wait runs out; a rank that died never puts its key
and is reported missing. Putting a key never waits for the other ranks, so a rank that failed
or was sent SIGTERM still delivers what it measured, and no rank hangs on a dead peer (a
collective such as ``gather_object`` would). When the store cannot be reached the caller falls
back to the per-rank files.

Example:
    >>> class Store(dict):  # the three methods used, as a c10d Store has them
    ...     def set(self, key, value): self[key] = value
    ...     def check(self, keys): return all(k in self for k in keys)
    ...     def get(self, key): return self[key]
    >>> store = Store()
    >>> publish_session(store, 1, {"label": "train.py"}, run_key="r")
    True
    >>> fetch_sessions(store, 2, run_key="r")[1]["label"]
    'train.py'
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["publish_session", "fetch_sessions", "run_key", "MAX_BYTES"]

#: sessions larger than this (compressed) are sent without their tree and timeline
MAX_BYTES = 32 * 1024 * 1024
_SLIM = ("tree", "timeline", "lint")


def run_key(environ: Mapping[str, str] | None = None) -> str:
    """A key prefix unique to this torchrun run and restart.

    Example:
        >>> run_key({"TORCHELASTIC_RUN_ID": "job7", "TORCHELASTIC_RESTART_COUNT": "1"})
        'torchdoctor/job7/1'
    """
    environ = os.environ if environ is None else environ
    run_id = environ.get("TORCHELASTIC_RUN_ID") or "run"
    return f"torchdoctor/{run_id}/{environ.get('TORCHELASTIC_RESTART_COUNT') or 0}"


def _key(prefix: str, rank: int) -> str:
    return f"{prefix}/rank{rank}"


def publish_session(store: Any, rank: int, data: Mapping[str, Any], *, run_key: str) -> bool:
    """Put one rank's session under its key; False (never an exception) when it fails.

    Example:
        >>> publish_session(None, 1, {}, run_key="r")  # no store to put it in
        False
    """
    try:
        payload = zlib.compress(json.dumps(data, default=str).encode(), 6)
        if len(payload) > MAX_BYTES:
            slim = {k: v for k, v in data.items() if k not in _SLIM}
            payload = zlib.compress(json.dumps(slim, default=str).encode(), 6)
        store.set(_key(run_key, rank), payload)
        return True
    except Exception:
        return False


def fetch_sessions(
    store: Any, world: int, *, run_key: str, skip: Iterable[int] = ()
) -> dict[int, dict[str, Any]]:
    """The sessions the other ranks have put so far (ranks in ``skip`` are not asked for).

    Example:
        >>> fetch_sessions(None, 2, run_key="r")  # an unreachable store: nothing, no error
        {}
    """
    found: dict[int, dict[str, Any]] = {}
    skipped = set(skip)
    for rank in range(world):
        if rank in skipped:
            continue
        key = _key(run_key, rank)
        try:
            if not store.check([key]):
                continue
            raw = store.get(key)
            data = json.loads(zlib.decompress(bytes(raw)).decode())
        except Exception:  # the store is gone or the value is damaged: files are the fallback
            continue
        if isinstance(data, dict):
            found[rank] = data
    return found

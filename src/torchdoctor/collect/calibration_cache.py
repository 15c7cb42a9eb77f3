"""The calibrated per-call costs of the profiler's collectors, kept on disk between runs.

The session's estimate of its own cost (``collect/profiler_overhead.py``) needs what a module
hook, a hot-lines timed call and a sync-audit call cost on this machine. Calibrating them runs
small loops with and without each collector: about 0.3 s at the end of every ``torchdoctor
run``, half of its fixed cost on a short script. They depend on the machine, the Python and
torch builds and the thread count, not on the script, so each calibration is kept in
``$XDG_CACHE_HOME/torchdoctor/calibration.json`` (``~/.cache/...`` without XDG_CACHE_HOME),
under a key naming all of those, and used again for MAX_AGE_S; a new torchdoctor version, torch
build, machine or thread count calibrates anew. ``TORCHDOCTOR_CALIBRATION`` names another file,
or turns the cache off (``off``, ``0``, ``none``, empty). A file that cannot be read or
written is ignored: the run calibrates as before.

Example:
    >>> import json
    >>> sorted(json.loads(machine_key()))[:4]
    ['cores', 'cpu', 'host', 'machine']
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "TORCHDOCTOR_CALIBRATION"
OFF = ("", "0", "off", "none", "false", "no")
#: a calibration is used again for a week; then measured anew (a machine's load, its kernel or
#: its CPU governor may have changed)
MAX_AGE_S = 7 * 24 * 3600.0
#: machine keys kept in the file, the most recent (a shared home on several machines)
MAX_KEYS = 16

_loaded: tuple[Path | None, dict[str, Any]] | None = None  # (path, content): read once


def cache_path() -> Path | None:
    """Where calibrations are kept (None: the cache is off).

    Example:
        >>> cache_path() is None or cache_path().name.endswith(".json")
        True
    """
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "torchdoctor" / "calibration.json"


def machine_key() -> str:
    """What the calibrated costs depend on: torchdoctor, torch and Python versions, the
    machine, its CPU and core count, and torch's intra-op threads.

    Example:
        >>> "torch" in machine_key()
        True
    """
    from torchdoctor._version import __version__

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name")), cpu)  # fmt: skip
    except OSError:
        pass
    return json.dumps({
        "torchdoctor": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "host": platform.node(), "machine": platform.machine(), "cpu": cpu,
        "cores": os.cpu_count(), "threads": torch.get_num_threads(),
    }, sort_keys=True)  # fmt: skip


def _read() -> dict[str, Any]:
    global _loaded
    path = cache_path()
    if _loaded is None or _loaded[0] != path:
        content: Any = {}
        if path is not None:
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
        _loaded = (path, content if isinstance(content, dict) else {})
    return _loaded[1]


def forget_loaded() -> None:
    """Read the file again at the next :func:`recall` (tests; another process wrote it).

    Example:
        >>> forget_loaded(); recall("a calibration never made") is None
        True
    """
    global _loaded
    _loaded = None


def recall(name: str) -> Any:
    """The calibration ``name`` kept for this machine, if younger than MAX_AGE_S; else None.

    Example:
        >>> recall("a calibration never made") is None
        True
    """
    entry = (_read().get(machine_key()) or {}).get(name)
    if not isinstance(entry, dict) or "value" not in entry:
        return None
    age = time.time() - float(entry.get("at", 0.0))
    return entry["value"] if 0 <= age <= MAX_AGE_S else None


def remember(name: str, value: Any) -> None:
    """Keep calibration ``name`` (JSON data) for this machine; written atomically (a temporary
    file renamed over the old one), errors ignored.

    Example (a cache in a scratch folder):
        >>> import os, tempfile
        >>> before = os.environ.get(CACHE_ENV)
        >>> os.environ[CACHE_ENV] = os.path.join(tempfile.mkdtemp(), "calibration.json")
        >>> remember("demo", {"timed": 3.5}); forget_loaded(); recall("demo")
        {'timed': 3.5}
        >>> os.environ[CACHE_ENV] = before if before is not None else "off"
    """
    path = cache_path()
    if path is None:
        return
    content = _read()
    key = machine_key()
    mine = content.setdefault(key, {})
    mine[name] = {"value": value, "at": time.time()}
    mine["_used"] = time.time()
    if len(content) > MAX_KEYS:  # (drop the keys used least recently)
        for old in sorted(content, key=lambda k: (content[k] or {}).get("_used", 0))[:-MAX_KEYS]:
            del content[old]
    scratch = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=".calibration.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(content, out)
        os.replace(scratch, path)
    except (OSError, TypeError, ValueError):  # (read-only home, a full disk, not JSON data)
        if scratch is not None and os.path.exists(scratch):
            os.unlink(scratch)

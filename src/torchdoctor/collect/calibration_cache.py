"""The calibrated per-call costs of the profiler's collectors, kept on disk between runs.

The session's estimate of its own cost (``collect/profiler_overhead.py``) needs what a module
hook, a hot-lines timed call and a sync-audit call cost on this machine. Calibrating them runs
small loops with and without each collector: about 0.3 s at the end of every ``torchdoctor
run``, half of its fixed cost on a short script. They depend on the machine, the Python and
torch builds and the thread count, not on the script, so each calibration is kept in
``$XDG_CACHE_HOME/torchdoctor/calibration.json`` (``~/.cache/...`` without XDG_CACHE_HOME),
under a key naming all of those, and used again for a day (REFRESH_S), then measured anew and
kept as the lower of the two, part by part (MAX_AGE_S); a new torchdoctor version, torch build,
machine or thread count calibrates anew. The same machine is not always as fast: a virtual
machine's CPU time per operation swung 2x within a day here (its neighbours share the caches
and memory bandwidth), and a module hook calibrated at 17 us per call in a quiet hour cost 36 us
in a busy one, so the estimate of a run's own overhead read 0.6x what was measured. So each
calibration is kept with the machine's speed when it was made (:func:`host_speed_us`, a
tiny forward and backward loop, timed in ~15 ms once per process) and read back scaled to the
speed now. ``TORCHDOCTOR_CALIBRATION`` names another file,
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
import warnings
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "TORCHDOCTOR_CALIBRATION"
OFF = ("", "0", "off", "none", "false", "no")
#: a calibration is used again for a day, then measured anew and kept as the lower of the two
#: (each part on its own: other processes only ever add time, so a calibration made on a busy
#: machine does not stay) while the kept one is under MAX_AGE_S; older, it is replaced
REFRESH_S = 24 * 3600.0
MAX_AGE_S = 7 * 24 * 3600.0
#: machine keys kept in the file, the most recent (a shared home on several machines)
MAX_KEYS = 16

_warned: set[Path] = set()  # explicit paths already warned about (once per process)
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


_speed_us: float | None = None  # host_speed_us(), measured once per process


def host_speed_us() -> float:
    """How fast this machine runs small torch work now: microseconds of thread CPU time per
    iteration of a tiny model's forward and backward (the fastest of a few rounds; measured
    once per process). Calibrations are kept with it and scaled by it when read back.

    Example:
        >>> host_speed_us() > 0
        True
    """
    global _speed_us
    if _speed_us is None:
        with torch.inference_mode(False), torch.enable_grad():
            model, x = reference_model()
            rounds = []
            for _ in range(SPEED_ROUNDS):
                start = time.thread_time_ns()
                for _ in range(SPEED_ITERATIONS):
                    model(x).sum().backward()
                rounds.append(time.thread_time_ns() - start)
        _speed_us = max(1e-3, min(rounds[1:]) / 1e3 / SPEED_ITERATIONS)  # (the first warms up)
    return _speed_us


def speed_before_profiling() -> None:
    """Measure :func:`host_speed_us` now, before a profiler's hooks go in, when the cache is on
    (it reads and writes calibrations with the speed). Measured later, inside a step (the sync
    audit's cost recalled in a detailed step), its tiny model ran forward and backward under
    the global module hooks: an inference loop's steps were cut at its ``Sequential`` and its
    backward counted (a Wav2Vec2 CTC loop's 60 steps became one).

    Example:
        >>> speed_before_profiling()  # (the tests run with the cache off: nothing measured)
    """
    if cache_path() is not None:
        host_speed_us()


def reference_model() -> tuple[torch.nn.Module, torch.Tensor]:
    """The tiny model and input the calibrations time (two ``Linear`` around a ``Tanh``, a
    batch of 4), made from seed 0 without touching the caller's random state.

    Example:
        >>> model, x = reference_model(); tuple(model(x).shape)
        (4, 8)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8))
        return model, torch.randn(4, 8)


#: the speed reference: rounds and iterations per round (about 15 ms in all)
SPEED_ROUNDS = 5
SPEED_ITERATIONS = 20


def scaled(value: Any, factor: float) -> Any:
    """``value`` with each number (in dicts, part by part) multiplied by ``factor``.

    Example:
        >>> scaled({"total": 2.0, "outside": {"a": 1.0}, "name": "x"}, 1.5)
        {'total': 3.0, 'outside': {'a': 1.5}, 'name': 'x'}
    """
    if isinstance(value, dict):
        return {key: scaled(part, factor) for key, part in value.items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value * factor
    return value


def recall(name: str) -> Any:
    """The calibration ``name`` kept for this machine, if younger than REFRESH_S, scaled to the
    machine's speed now (:func:`host_speed_us`); else None.

    Example:
        >>> recall("a calibration never made") is None
        True
    """
    entry = _entry(name)
    return entry["value"] if entry is not None and entry["age"] <= REFRESH_S else None


def _entry(name: str) -> dict[str, Any] | None:
    entry = (_read().get(machine_key()) or {}).get(name)
    if not isinstance(entry, dict) or "value" not in entry:
        return None
    try:
        age = time.time() - float(entry.get("at", 0.0))
        speed = float(entry["speed_us"])  # (kept before speeds were: calibrate anew)
    except (KeyError, TypeError, ValueError):
        return None
    if not (0 <= age <= MAX_AGE_S) or speed <= 0:
        return None
    return {"value": scaled(entry["value"], host_speed_us() / speed), "age": age}


def lower(kept: Any, new: Any) -> Any:
    """``new`` with each number replaced by the kept one where that is lower (dicts of numbers,
    part by part, the kept parts ``new`` lacks staying; anything else: ``new``).

    Example:
        >>> lower({"total": 9.0, "outside": 2.0}, {"total": 8.5, "outside": 2.5})
        {'total': 8.5, 'outside': 2.0}
        >>> lower(3.0, 2.0), lower("a", 2.0)
        (2.0, 2.0)
    """
    if isinstance(new, dict) and isinstance(kept, dict):  # (parts only kept stay)
        return {**kept, **{key: lower(kept.get(key), value) for key, value in new.items()}}
    numbers = (int, float)
    if isinstance(new, numbers) and isinstance(kept, numbers) and not isinstance(kept, bool):
        return min(kept, new)
    return new


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
    previous = _entry(name)  # (still valid: the lower of the two stays, part by part)
    if previous is not None:
        value = lower(previous["value"], value)
    content = _read()
    key = machine_key()
    mine = content.setdefault(key, {})
    if not isinstance(mine, dict):
        mine = content[key] = {}
    mine[name] = {"value": value, "at": time.time(), "speed_us": host_speed_us()}
    mine["_used"] = time.time()
    if len(content) > MAX_KEYS:  # (drop the keys used least recently)
        def used(k: str) -> float:
            entry = content[k]
            return entry.get("_used", 0) if isinstance(entry, dict) else 0

        for old in sorted(content, key=used)[:-MAX_KEYS]:
            del content[old]
    scratch = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=".calibration.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(content, out)
        os.replace(scratch, path)
    except (OSError, TypeError, ValueError) as error:  # (read-only home, a full disk, ...)
        if scratch is not None and os.path.exists(scratch):
            os.unlink(scratch)
        if os.environ.get(CACHE_ENV) and path not in _warned:  # (a path the user chose: say so)
            _warned.add(path)
            warnings.warn(
                f"torchdoctor: cannot keep calibrations in {CACHE_ENV}={path} ({error}); "
                "expected a writable file path, or 'off'. Each run calibrates instead "
                "(about 0.4 s at its end).",
                RuntimeWarning,
                stacklevel=2,
            )

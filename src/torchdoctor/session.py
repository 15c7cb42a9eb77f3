"""The Session: a versioned, plain-data JSON document describing one profiled run.

collect/ writes it, analyze/ reads it and returns new values, render/ formats it. The layout is
specified in ``docs/session-schema.md``. A :class:`Session` wraps the plain dict; it adds
validation, an atomic save, a loader that never executes code (JSON only, no pickle), and
``tree()`` / ``_repr_html_()`` (Jupyter), which reach rendering through the view registry below.

The view registry is the one seam between the data model and rendering (dependency inversion):
this module and collect/ never import render/; :mod:`torchdoctor.views` registers the render
functions here with :func:`register_view`, and ``import torchdoctor`` imports it, so a view is
always there when a Session (or a SyncAudit) asks :func:`view` for it.

Example:
    >>> from torchdoctor.session import Session
    >>> s = Session.new(label="demo")
    >>> s["schema_version"]
    1
    >>> Session.from_dict(s.to_dict())["label"]
    'demo'
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torchdoctor.session_read import fmt_ms, quantile

SCHEMA_VERSION = 1

#: Top-level keys every session has (others may be added; readers ignore unknown keys).
TOP_LEVEL_KEYS = (
    "schema_version",
    "tool",
    "created",
    "label",
    "environment",
    "config",
    "steps",
    "phases",
    "step_ms",
    "tree",
    "syncs",
    "sync_audit",
    "recomputation",
    "inference",
    "collectives",
    "timeline",
    "hot_lines",
    "lint",
    "advice",
    "interrupted",
    "error",
)

STAT_KEYS = ("median", "min", "max", "q1", "q3")


def stat(values: Sequence[float]) -> dict[str, float]:
    """Summarize values as a Stat: median, min, max and quartiles (zeros when empty).

    Example:
        >>> stat([1.0, 2.0, 3.0, 4.0])["median"]
        2.5
    """
    data = sorted(float(v) for v in values)
    if not data:
        return {key: 0.0 for key in STAT_KEYS}
    return {
        "median": quantile(data, 0.5),
        "min": data[0],
        "max": data[-1],
        "q1": quantile(data, 0.25),
        "q3": quantile(data, 0.75),
    }


def environment() -> dict[str, Any]:
    """Describe where the session runs: torch and Python versions, device, threads, the CPU
    cores this process may use (``cpus``: what DataLoader workers can be spread over), whether
    the device computes bfloat16 / float16 in hardware (``bf16_native``, ``fp16_native``).

    Example:
        >>> "torch" in environment()
        True
    """
    import torch

    device, cuda_version, cpu = "cpu", None, torch.cpu
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        device = f"cuda:{index} {torch.cuda.get_device_name(index)}"
        cuda_version = torch.version.cuda
    try:  # bf16 / fp16 in hardware (CUDA 8.0+; AVX512-BF16, AMX): else autocast is emulated
        gpu = device != "cpu"
        bf16: bool | None = bool(torch.cuda.is_bf16_supported(including_emulation=False) if gpu
                                 else cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
        fp16: bool | None = gpu or bool(cpu._is_amx_fp16_supported())
    except (AttributeError, RuntimeError, TypeError):
        bf16 = fp16 = None
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "threads": torch.get_num_threads(),
        "cpus": _usable_cpus(),
        "cuda": cuda_version,
        "bf16_native": bf16,  # the device computes bfloat16 in hardware (None: unknown)
        "fp16_native": fp16,  # ... float16 (every CUDA GPU; a CPU with AMX-FP16)
        "argv": list(sys.argv),
    }


def _usable_cpus(cgroup: str = "/sys/fs/cgroup") -> int | None:
    """CPU cores this process may run on: its affinity mask where the OS has one, capped by
    the container's CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``: a container
    given 2 CPUs on a 64-core host, where torch still starts a thread per physical core).

    Example:
        >>> _usable_cpus() >= 1
        True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows: no affinity mask
        cores = os.cpu_count() or 0
    quota = None
    for path, pair in ((f"{cgroup}/cpu.max", None),
                       (f"{cgroup}/cpu/cpu.cfs_quota_us", f"{cgroup}/cpu/cpu.cfs_period_us")):
        try:
            with open(path) as f:
                fields = f.read().split()
            if pair is not None:
                with open(pair) as f:
                    fields += f.read().split()
            if len(fields) >= 2 and fields[0] not in ("max", "-1") and float(fields[1]) > 0:
                quota = max(1, math.ceil(float(fields[0]) / float(fields[1])))
                break
        except (OSError, ValueError):
            continue
    found = [n for n in (cores, quota) if n]
    return min(found) if found else None


def _tool() -> str:
    from torchdoctor._version import __version__

    return f"torchdoctor {__version__}"


#: view name -> function rendering session data as text (see :func:`register_view`).
_VIEWS: dict[str, Callable[..., str]] = {}


def register_view(name: str, function: Callable[..., Any]) -> None:
    """Make ``function`` the view called ``name`` (the last registration wins).

    Views used by the data model: ``"tree"`` (``Session.tree()``), ``"html"``
    (``Session._repr_html_()``) and ``"sync_table"`` (``str(SyncAudit)``);
    :mod:`torchdoctor.views` registers them.

    Example:
        >>> register_view("shout", lambda session: str(session["label"]).upper())
        >>> view("shout")({"label": "demo"})
        'DEMO'
    """
    if not callable(function):
        raise TypeError(
            f"register_view({name!r}, ...) expects a function, got {type(function).__name__}"
        )
    _VIEWS[name] = function


def view(name: str) -> Callable[..., Any]:
    """The function registered as view ``name``; LookupError naming the known views if none.

    Example:
        >>> view("tree") is not None
        True
    """
    try:
        return _VIEWS[name]
    except KeyError:
        known = ", ".join(sorted(_VIEWS)) or "none"
        raise LookupError(
            f"no view {name!r} is registered (known: {known}); `import torchdoctor` registers "
            "the standard views (torchdoctor.views)"
        ) from None


def empty_session_dict(label: str | None = None) -> dict[str, Any]:
    """A schema-valid session with no measurements yet (every top-level key present).

    Example:
        >>> empty_session_dict("x")["steps"]
        []
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": _tool(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "label": label,
        "environment": {},
        "config": {"notes": []},
        "steps": [],
        "phases": {},
        "step_ms": stat([]),
        "tree": None,
        "syncs": [],
        "sync_audit": None,
        "recomputation": [],
        "inference": None,
        "collectives": None,
        "timeline": [],
        "hot_lines": None,
        "lint": [],
        "advice": [],
        "interrupted": False,
        "error": None,
    }


class Session(Mapping):
    """One profiled run as plain data; reads like a dict (``session["tree"]``).

    Example:
        >>> s = Session.new(label="demo")
        >>> s["advice"] = [{"rule": "x"}]
        >>> s.to_dict()["advice"][0]["rule"]
        'x'
    """

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        if data is None:
            data = empty_session_dict()
        if not isinstance(data, Mapping):
            raise TypeError(
                f"Session expects a dict (the JSON document), got {type(data).__name__}; "
                "use Session.load(path) to read a saved file"
            )
        self._data: dict[str, Any] = dict(data)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def new(cls, label: str | None = None, *, with_environment: bool = True) -> Session:
        """A fresh, empty session (environment filled in unless told not to).

        Example:
            >>> Session.new("run", with_environment=False)["label"]
            'run'
        """
        data = empty_session_dict(label)
        if with_environment:
            data["environment"] = environment()
        return cls(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Session:
        """Validate a plain dict (e.g. parsed JSON) and wrap it; missing optional keys filled.

        Raises ValueError when ``schema_version`` is missing or not one this version reads.

        Example:
            >>> Session.from_dict({"schema_version": 1})["steps"]
            []
        """
        if not isinstance(data, Mapping):
            raise TypeError(
                f"Session.from_dict expects a dict, got {type(data).__name__}; "
                "pass the parsed JSON object of a saved session"
            )
        version = data.get("schema_version")
        if version is None:
            raise ValueError(
                "not a torchdoctor session: the document has no 'schema_version' key; "
                "expected a file written by Session.save() or `torchdoctor run --save`"
            )
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"session schema_version {version!r} is not supported: this torchdoctor reads "
                f"version {SCHEMA_VERSION}; re-create the session with this version"
            )
        filled = empty_session_dict()
        filled["created"] = None
        filled["tool"] = None
        filled.update(copy.deepcopy(dict(data)))
        return cls(filled)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the underlying plain dict (JSON-serializable).

        Example:
            >>> Session.new("a", with_environment=False).to_dict()["schema_version"]
            1
        """
        return copy.deepcopy(self._data)

    # -- persistence ----------------------------------------------------------------------
    def to_json(self, indent: int | None = 1) -> str:
        """The session as JSON text (NaN/inf are rejected: they are not valid JSON).

        Example:
            >>> '"schema_version": 1' in Session.new("a", with_environment=False).to_json()
            True
        """
        return json.dumps(self._data, indent=indent, allow_nan=False, default=_json_default)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the session as JSON atomically (temporary file, then ``os.replace``).

        Example:
            >>> import tempfile, os
            >>> p = os.path.join(tempfile.mkdtemp(), "s.json")
            >>> Session.new("a", with_environment=False).save(p).name
            's.json'
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_json()
        write_text_atomic(target, text + "\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Session:
        """Read a session saved by :meth:`save` (plain JSON; never executes code).

        Example:
            >>> import tempfile, os
            >>> p = os.path.join(tempfile.mkdtemp(), "s.json")
            >>> _ = Session.new("a", with_environment=False).save(p)
            >>> Session.load(p)["label"]
            'a'
        """
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no session file at {str(source)!r}; save one with Session.save(path)"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{str(source)!r} is not valid JSON ({exc}); expected a file written by "
                "Session.save()"
            ) from None
        return cls.from_dict(data)

    # -- rendering (through the view registry: the data model never imports render/) -----
    def tree(self, **options: Any) -> str:
        """The module tree as console text (the ``"tree"`` view, ``render.tree.render_tree_text``).

        Example:
            >>> Session.new("a", with_environment=False).tree()
            '(no module tree recorded)'
        """
        return view("tree")(self, **options)

    def _repr_html_(self) -> str:
        """The HTML report, for Jupyter (the ``"html"`` view; advice computed when missing).

        Example:
            >>> page = Session.new("nb", with_environment=False)._repr_html_()
            >>> page.startswith("<!doctype html>")
            True
        """
        return view("html")(self)

    # -- mapping protocol -----------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        steps = len(self._data.get("steps") or [])
        median = (self._data.get("step_ms") or {}).get("median")
        timing = f", step {fmt_ms(median)}" if isinstance(median, (int, float)) else ""
        return f"Session(label={self._data.get('label')!r}, steps={steps}{timing})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Session):
            return self._data == other._data
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _json_default(value: Any) -> Any:
    """Convert the few non-JSON values that may slip in (tuples are fine; numpy scalars)."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"session value of type {type(value).__name__} is not JSON data; store plain numbers, "
        "strings, lists and dicts in a Session"
    )


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (a reader never sees a
    half-written file), with the permissions a plain ``open(path, "w")`` would give (the
    temporary file is private: 0600).

    Example:
        >>> import tempfile, os
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> write_text_atomic(target, "hi")
        >>> target.read_text(), oct(os.stat(target).st_mode & 0o777) == oct(0o666 & ~_umask())
        ('hi', True)
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it: set, then restore at once
    os.umask(mask)
    return mask

"""Processes the profiled code starts: their work is outside this process's profile.

A Hogwild trainer (pytorch/examples ``mnist_hogwild``) or a hand-rolled ``mp.Process`` pool
trains in child processes while the main process waits in ``join()``: the profile of the main
process then shows a run of waiting. :class:`ChildProcesses` wraps
``multiprocessing.process.BaseProcess.start`` while profiling and records what each started
process runs (its target's name; ``torch.multiprocessing.spawn``'s wrapper is looked through
to the user's function), so the report can say that the work happened elsewhere and what to
profile instead. DataLoader workers are the loader's own business (its ``num_workers``) and are
not counted.

Example:
    >>> watch = ChildProcesses()
    >>> watch.started["train"] = 2  # what install() counts as processes start
    >>> watch.note()[:46]
    '2 process(es) started by the script (train x2)'
"""

from __future__ import annotations

import functools
import multiprocessing.process
import os
import time
from collections.abc import Callable
from typing import Any

#: targets that are a library's own workers, not the user's work
_OWN_WORKERS = ("torch.utils.data._utils.worker", "torch.utils.data.dataloader")


def target_name(process: Any) -> str | None:
    """The name of what ``process`` runs (None for a DataLoader worker or no target).

    Example:
        >>> import multiprocessing
        >>> target_name(multiprocessing.Process(target=print))
        'print'
    """
    target = getattr(process, "_target", None)
    if target is None:
        return None
    module = str(getattr(target, "__module__", "") or "")
    if module.startswith(_OWN_WORKERS):
        return None
    name = str(getattr(target, "__qualname__", None) or getattr(target, "__name__", "?"))
    if module.startswith("torch.multiprocessing") and name == "_wrap":  # mp.spawn(fn, ...)
        args = getattr(process, "_args", ()) or ()
        if args and callable(args[0]):
            return str(getattr(args[0], "__qualname__", None) or getattr(args[0], "__name__", "?"))
    return name


class ChildProcesses:
    """Counts the processes started while installed, by target name.

    ``follow`` (set by `torchdoctor run`, ``commands/run_children.py``): called as
    ``follow(process, name, index)`` before each such process starts, it may replace the
    process's target by one that profiles it, and returns where that profile goes (or None);
    ``followed`` lists ``{"name", "index", "out"}`` of those.
    """

    def __init__(self) -> None:
        self.started: dict[str, int] = {}
        self.follow: Callable[[Any, str, int], str | None] | None = None
        self.followed: list[dict[str, Any]] = []
        #: set by `run` too: called as ``relaunch(argv, env)`` for each ``subprocess.Popen`` of
        #: a command list; returns ``(argv to run instead, name, index, out)`` when the command
        #: starts the script itself again (Lightning's DDP launcher), else None
        self.relaunch: Callable[[list, Any], tuple[list, str, int, str] | None] | None = None
        #: Python scripts started in a new interpreter and not followed, by base name
        self.scripts: dict[str, int] = {}

    def install(self) -> Callable[[], None]:
        """Wrap ``BaseProcess.start``; returns the undo."""
        cls = multiprocessing.process.BaseProcess
        original = cls.__dict__["start"]
        started = self.started

        @functools.wraps(original)
        def start(process: Any) -> Any:
            name = target_name(process)
            if name is not None:
                index = started.get(name, 0)
                started[name] = index + 1
                if self.follow is not None:
                    out = self.follow(process, name, index)
                    if out is not None:
                        self.followed.append(
                            {"name": name, "index": index, "out": out, "started_at": time.time()}
                        )
            return original(process)

        cls.start = start
        undo_popen = self._install_popen()

        def undo() -> None:
            undo_popen()
            if cls.__dict__.get("start") is start:
                cls.start = original

        return undo

    def _install_popen(self) -> Callable[[], None]:
        """Wrap ``subprocess.Popen.__init__`` for :attr:`relaunch`; returns the undo."""
        import subprocess

        original = subprocess.Popen.__init__

        @functools.wraps(original)
        def init(popen: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
            if isinstance(args, (list, tuple)) and args:
                try:
                    found = self.relaunch(list(args), kwargs.get("env")) if self.relaunch else None
                    script = None if found else python_script(list(args))
                except Exception:  # never break the script's own process launch
                    found = script = None
                if script is not None:  # (torchrun's ranks: `python -u train.py`)
                    self.scripts[script] = self.scripts.get(script, 0) + 1
                if found is not None:
                    args, name, index, out = found
                    self.started[name] = self.started.get(name, 0) + 1
                    self.followed.append(
                        {"name": name, "index": index, "out": out, "started_at": time.time()}
                    )
            original(popen, args, *rest, **kwargs)

        subprocess.Popen.__init__ = init  # type: ignore[method-assign]

        def undo() -> None:
            if subprocess.Popen.__init__ is init:
                subprocess.Popen.__init__ = original  # type: ignore[method-assign]

        return undo

    def note(self) -> str | None:
        """What the report says of them (None when none were started)."""
        processes = self._processes_note()
        if not self.scripts:
            return processes
        count = sum(self.scripts.values())  # (the profiled script launched other scripts)
        what = ", ".join(f"{name} x{n}" for name, n in sorted(self.scripts.items())[:5])
        scripts = (f"{count} Python process(es) started by the script ({what}) ran outside this "
                   "profile, unprofiled: to profile them, run torchdoctor inside each (under a "
                   "launcher: `torchrun --nproc_per_node 2 -m torchdoctor run train.py`)")
        return scripts if processes is None else f"{processes}; {scripts}"

    def _processes_note(self) -> str | None:
        if not self.started:
            return None
        count = sum(self.started.values())
        what = ", ".join(f"{name} x{n}" for name, n in sorted(self.started.items())[:5])
        if self.followed:
            where = sorted({os.path.dirname(entry["out"]) for entry in self.followed})
            return (
                f"{count} process(es) started by the script ({what}) ran outside this profile; "
                f"{len(self.followed)} of them were profiled on their own (session.json and "
                f"reports per process in {', '.join(where)}: session['children'])"
            )
        return (
            f"{count} process(es) started by the script ({what}) ran outside this profile: "
            "their steps are not in it (this process only waited for them if it joined); "
            "to see their work, profile the function they run in one process "
            "(torchdoctor.profile, or call it directly under `torchdoctor run`)"
        )


def python_script(argv: list) -> str | None:
    """The base name of the user's script a command list runs in a new Python interpreter
    (``[python, -u, train.py, ...]``: torchrun's ranks), None for anything else (a module, a
    library's own script under site-packages or torch: Inductor's compile workers).

    Example:
        >>> python_script(["/usr/bin/python3", "-u", "/w/train.py", "--lr", "1"])
        'train.py'
        >>> python_script(["gcc", "a.c"]), python_script(["python", "-m", "pip"])
        (None, None)
    """
    if len(argv) < 2 or not os.path.basename(str(argv[0])).startswith("python"):
        return None
    rest = [str(a) for a in argv[1:]]
    while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
        rest = rest[1:]  # (interpreter flags: -u, -O, -X ...; their values are rare here)
    if not rest or not rest[0].endswith(".py"):
        return None
    path = os.path.abspath(rest[0])
    if "site-packages" in path or os.sep + "torch" + os.sep in path:
        return None
    return os.path.basename(path)

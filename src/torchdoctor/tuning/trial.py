"""Run one trial in a fresh Python process and read back its results (``tuning/harness.py``).

The child runs ``python -m torchdoctor.tuning.harness SPEC.json`` in its own session (Ctrl-C in
the terminal reaches torchdoctor only, which then ends the child), with the script's output in
a log file. A child that outlives ``timeout`` is killed and its trial reported as failed.

Example:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "boom.py")
    >>> _ = open(path, "w").write("raise SystemExit(3)\\n")
    >>> run_trial(path, [], [], workdir=folder, timeout=120)["exit_code"]
    3
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torchdoctor
from torchdoctor.collect.script_module import absolute_target
from torchdoctor.tuning.knobs import KNOB_BY_NAME

_PACKAGE_ROOT = str(Path(torchdoctor.__file__).resolve().parent.parent)
_counter = [0]


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        process.kill()
    process.wait()


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:].strip()
    except OSError:
        return ""


def run_trial(
    script: str,
    args: Sequence[str],
    knobs: Sequence[str],
    *,
    workdir: str | os.PathLike[str],
    warmup: int = 2,
    steps: int = 10,
    max_seconds: float | None = None,
    seed: int = 0,
    timeout: float = 600.0,
    boundary: str | None = None,
    grace_s: float | None = None,
) -> dict[str, Any]:
    """Run ``script`` with ``knobs`` on in a child process; its result dict (``error`` on failure).

    ``wall_s`` is added: the trial's whole time, start-up included. ``boundary``: the step
    boundary an earlier trial settled on (model calls before it are not steps); ``grace_s``:
    how long steps counted at model calls go on, waiting for a first optimizer step.
    """
    _counter[0] += 1
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"trial{os.getpid()}-{_counter[0]}"
    spec = {"script": absolute_target(script), "args": list(args), "knobs": list(knobs),
            "warmup": warmup, "steps": steps, "max_seconds": max_seconds, "seed": seed,
            "result": str(stem) + ".json", "boundary": boundary, "grace_s": grace_s}  # fmt: skip
    Path(str(stem) + ".spec.json").write_text(json.dumps(spec), encoding="utf-8")
    log = Path(str(stem) + ".log")
    env = dict(os.environ)
    for name in knobs:  # (variables a process reads when it starts: glibc's malloc settings)
        env.update(KNOB_BY_NAME[name].env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "torchdoctor.tuning.harness", str(stem) + ".spec.json"],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(process)
            return {"knobs": list(knobs), "error": f"timed out after {timeout:.0f} s",
                    "wall_s": time.perf_counter() - started, "log": str(log)}  # fmt: skip
        except BaseException:  # Ctrl-C: the child goes too, then the caller decides
            _kill(process)
            raise
    result_path = Path(spec["result"])
    if not result_path.exists():
        result = {"knobs": list(knobs), "error": f"the trial process ended with code "
                  f"{process.returncode} and no result: {_tail(log)}"}  # fmt: skip
    else:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    result["wall_s"] = time.perf_counter() - started
    result["log"] = str(log)
    return result

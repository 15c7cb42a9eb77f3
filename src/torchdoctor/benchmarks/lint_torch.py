"""Benchmark: ``torchdoctor lint`` speed and robustness on the installed torch package.

Three tables:

* speed on torch/nn + torch/optim, one process, CPU seconds: plain ``ast.parse`` +
  ``ast.walk`` of the same files (the floor), ``torchdoctor lint``, and TorchFix 0.7.0's
  flake8 checker (all its visitors, in its own process, when ``torchfix_python`` names an
  interpreter that has it: TorchFix pins an older LibCST, so it lives in its own environment,
  ``pip install torchdoctor[bench]`` or a separate venv). Runs alternate (floor, linter, floor,
  linter, ...); the median of each is reported, and each ratio is taken against the floor
  measured in the same process.
* the whole package: files, CPU seconds, crashes (internal errors), syntax errors, findings;
* findings per rule.
"""

from __future__ import annotations

import ast
import json
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

from torchdoctor.measure.table import BenchTable

#: TorchFix's flake8 checker over the files named on stdin, alternating with the ast floor;
#: prints {"floor": [...], "torchfix": [...], "findings": n} (CPU seconds per round).
_TORCHFIX_DRIVER = """
import ast, json, sys, time
from torchfix.torchfix import TorchChecker
files = json.loads(sys.stdin.read())
rounds = int(sys.argv[1])
texts = [open(f, encoding="utf-8", errors="replace").read() for f in files]
out = {"floor": [], "torchfix": [], "findings": 0}
for _ in range(rounds):
    t = time.process_time()
    for text in texts:
        for _node in ast.walk(ast.parse(text)):
            pass
    out["floor"].append(time.process_time() - t)
    t = time.process_time()
    n = 0
    for text in texts:
        n += sum(1 for _ in TorchChecker(None, text.splitlines(keepends=True)).run())
    out["torchfix"].append(time.process_time() - t)
    out["findings"] = n
print(json.dumps(out))
"""


def _floor(files: list[Path]) -> float:
    start = time.process_time()
    for path in files:
        for _node in ast.walk(ast.parse(path.read_bytes())):
            pass
    return time.process_time() - start


def _lint(files: list[Path]) -> tuple[float, int]:
    from torchdoctor.lint.runner import lint_paths

    start = time.process_time()
    found = lint_paths(files)
    return time.process_time() - start, len(found)


def speed_table(
    files: list[Path], rounds: int = 3, torchfix_python: str | None = None, where: str = ""
) -> BenchTable:
    """CPU seconds of the ast floor, torchdoctor lint and (optionally) TorchFix on ``files``.

    Example:
        >>> speed_table([Path(__file__)], rounds=1).columns[0]
        'tool'
    """
    floor, lint, found = [], [], 0
    for _ in range(rounds):
        floor.append(_floor(files))
        seconds, found = _lint(files)
        lint.append(seconds)
    base = statistics.median(floor)
    table = BenchTable(
        f"lint speed on {where or f'{len(files)} files'} (one process, CPU s, median of {rounds})",
        ["tool", "CPU s", "x ast.parse+walk (same process)", "findings"],
        [
            ["ast.parse + ast.walk (floor)", base, 1.0, None],
            ["torchdoctor lint", statistics.median(lint), statistics.median(lint) / base, found],
        ],
        notes=[
            "Runs alternate floor/linter in one process; each ratio uses the floor measured in "
            "the same process. The machine is shared, so absolute seconds are noisy."
        ],
    )
    if torchfix_python:
        proc = subprocess.run(
            [torchfix_python, "-c", _TORCHFIX_DRIVER, str(rounds)],
            input=json.dumps([str(f) for f in files]),
            capture_output=True,
            text=True,
            check=True,
        )
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        tf, tf_floor = statistics.median(out["torchfix"]), statistics.median(out["floor"])
        table.add_row("TorchFix 0.7.0 (all visitors)", tf, tf / tf_floor, out["findings"])
    return table


def run(quick: bool = False, jobs: int = 1, torchfix_python: str | None = None) -> list[BenchTable]:
    """Speed on torch/nn + torch/optim (quick: 3 files), then the whole package (quick: the
    same 3 files) and its findings per rule. TorchFix joins the speed table when it is
    importable here or ``TORCHDOCTOR_TORCHFIX_PYTHON`` names a Python that has it.

    Example:
        >>> tables = run(quick=True)  # doctest: +SKIP

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("lint"))["lint_torch"] is run  # `torchdoctor bench lint` runs it
        True
    """
    import importlib.util
    import os
    import sys

    import torch

    from torchdoctor.lint.registry import RULES, resolve_codes

    if torchfix_python is None:
        torchfix_python = os.environ.get("TORCHDOCTOR_TORCHFIX_PYTHON") or (
            sys.executable if importlib.util.find_spec("torchfix") else None
        )
    from torchdoctor.lint.runner import families_for, iter_python_files, lint_paths

    root = Path(torch.__file__).parent
    quick_files = ["optim/sgd.py", "optim/adam.py", "nn/modules/linear.py"]
    sample = (
        [root / f for f in quick_files]
        if quick
        else [Path(p) for p in iter_python_files([root / "nn", root / "optim"])]
    )
    speed = speed_table(
        sample,
        rounds=1 if quick else 3,
        torchfix_python=torchfix_python,
        where="3 torch files" if quick else f"torch/nn + torch/optim ({len(sample)} files)",
    )
    targets = [root / f for f in quick_files] if quick else [root]
    files = list(iter_python_files(targets))
    codes = resolve_codes()
    analysed = sum(
        bool(families_for(Path(f).read_text(encoding="utf-8", errors="replace"), codes))
        for f in files
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    findings = lint_paths(targets, jobs=jobs)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    crashes = [f for f in findings if f.code == "TD000" and "internal error" in f.message]
    syntax = [f for f in findings if f.code == "TD000" and f not in crashes]
    where = f"torch {torch.__version__}{' (3 files)' if quick else ''}"
    summary = BenchTable(
        f"lint over {where} source",
        [
            "files",
            "analysed (a rule family's trigger text present)",
            "wall s",
            "CPU s (this process)",
            "crashes",
            "syntax errors",
            "findings",
        ],
        [
            [
                len(files),
                analysed,
                wall,
                cpu if jobs == 1 else None,
                len(crashes),
                len(syntax),
                len(findings),
            ]
        ],
        notes=[
            "CPU s is this process only (blank with --jobs > 1); the machine was shared by "
            "other agents, so wall time is noisy.",
        ],
    )
    counts = Counter(f.code for f in findings)
    per_rule = BenchTable(
        f"findings per rule ({where})",
        ["code", "name", "count"],
        [[code, RULES[code].name, counts.get(code, 0)] for code in RULES],
    )
    return [speed, summary, per_rule]

"""Benchmark: ``torchdoctor lint`` over the installed torch package (robustness and speed).

Reports files checked, how many needed the full LibCST analysis (the others hold no trigger
text and are only syntax-checked), CPU seconds, crashes (internal errors) and findings per rule.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from torchdoctor.bench.table import BenchTable


def run(quick: bool = False, jobs: int = 1) -> list[BenchTable]:
    """Lint three torch files (quick) or the whole torch package; return two tables.

    Example:
        >>> tables = run(quick=True)  # doctest: +SKIP
    """
    import torch

    from torchdoctor.lint.registry import RULES, resolve_codes
    from torchdoctor.lint.runner import families_for, iter_python_files, lint_paths

    root = Path(torch.__file__).parent
    quick_files = ["optim/sgd.py", "optim/adam.py", "nn/modules/linear.py"]
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
            "analysed (LibCST)",
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
    return [summary, per_rule]

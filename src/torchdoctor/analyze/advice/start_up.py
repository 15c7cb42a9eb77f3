"""Hot lines that are ``import`` statements: start-up work, said as such.

A run whose step boundary was never found (a short script, an inference script without a
loop, a script that crashed before its first step) is profiled as one step, and the import of a
heavy package (``from torchvision import datasets``: ~0.9 s) can be most of it. That line is no
per-step work to batch or hoist, nor a library's "own work per step": it runs once per process.
The hot-line rule hands such rows here for their own advice (what is imported, its measured
time, what can be done when start-up matters).

Example:
    >>> imported_modules("from torchvision import datasets, transforms")
    ['torchvision']
    >>> imported_modules("x = torch.relu(x)")
    []
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, location


def imported_modules(code: str) -> list[str]:
    """The top-level packages a source line imports (``import a.b, c`` / ``from a.b import x``),
    or ``[]`` when the line is no complete import statement.

    Example:
        >>> imported_modules("import numpy as np, torch.nn as nn")
        ['numpy', 'torch']
        >>> imported_modules("from . import model")
        ['.']
    """
    try:
        tree = ast.parse(code.strip())
    except (SyntaxError, ValueError):  # (a line cut from a longer statement)
        return []
    if len(tree.body) != 1:
        return []
    statement = tree.body[0]
    if isinstance(statement, ast.Import):
        names = [alias.name.split(".")[0] for alias in statement.names]
    elif isinstance(statement, ast.ImportFrom):
        names = [(statement.module or ".").split(".")[0] if not statement.level else "."]
    else:
        return []
    return list(dict.fromkeys(names))


def import_advice(row: Mapping[str, Any], share: float, whole_run: bool) -> Advice:
    """The advice on a hot ``import`` line (``whole_run``: the run had no step boundary, so the
    "step" is the whole run).

    Example:
        >>> row = {"file": "/s/main.py", "line": 6, "location": "main.py:6", "own_ms": 880.0,
        ...        "code": "from torchvision import datasets"}
        >>> a = import_advice(row, 0.96, whole_run=True)
        >>> a.title
        'main.py:6 takes 96% of the run (880 ms): importing torchvision, once per process'
        >>> a.estimated_saving_ms is None, a.confidence
        (True, 'high')
    """
    packages = imported_modules(str(row.get("code") or ""))
    named = ", ".join("a relative module" if p == "." else p for p in packages) or "a module"
    span = "the run" if whole_run else "the step"
    own = row.get("own_ms")
    spent = fmt_ms(float(own)) if isinstance(own, (int, float)) else "?"
    evidence = [
        f"{row['location']} `{str(row.get('code') or '').strip()}`: {spent} "
        f"({100 * share:.0f}% of {span}), measured per line",
        "an import runs its package's module-level code once per process (later imports of it "
        "are a dictionary lookup): start-up time, not work repeated per step",
    ]
    if whole_run:
        evidence.append(
            "no step boundary was seen, so the whole run is profiled as one step and its "
            "start-up counts in it; a training or inference loop makes it negligible"
        )
    return Advice(
        rule="hot-line",
        title=f"{row['location']} takes {100 * share:.0f}% of {span} ({spent}): importing "
        f"{named}, once per process",
        confidence="high",
        evidence=evidence,
        fix=(
            "Nothing per step to change. If start-up matters (a short job, a command-line "
            "tool, many short processes), import the package inside the function that needs "
            "it, so runs that never call that function skip it, or keep one long-lived process "
            "(a server, a notebook kernel) that imports it once."
        ),
        heat=min(1.0, share) * 0.1,  # (ranked after what recurs: it does not)
        locations=[location(row["file"], row["line"])],
        cause="start-up import",
    )

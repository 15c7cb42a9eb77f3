"""Shared helpers for the hot-lines tests: find marked lines, profile a step, read lines."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import torchdoctor


def marked_line(function: Callable, marker: str) -> int:
    """The line number of the line of ``function`` whose text contains ``# marker``."""
    lines, first = inspect.getsourcelines(function)
    for offset, text in enumerate(lines):
        if f"# {marker}" in text:
            return first + offset
    raise AssertionError(f"no line marked '# {marker}' in {function.__name__}")


def profile(step: Callable[[], Any], steps: int = 3, **options: Any) -> Any:
    """A session of ``step`` (one warm-up step), no sync audit, advice filled in."""
    from torchdoctor.analyze.advice import advice_dicts

    session = torchdoctor.profile(step, steps=steps, warmup=1, syncs=False, **options)
    session["advice"] = advice_dicts(session)
    return session


def lines_at(session: Mapping[str, Any], file: str, line: int) -> list[Mapping[str, Any]]:
    """The session's hot-line records of ``file:line`` (one per owner)."""
    return [
        r
        for r in (session.get("hot_lines") or {}).get("lines") or ()
        if r["line"] == line and os.path.samefile(r["file"], file)
    ]


def mean(stat: Mapping[str, Any] | None) -> float:
    return float((stat or {}).get("mean", 0.0))

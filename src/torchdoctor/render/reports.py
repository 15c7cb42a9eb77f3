"""Write a session's reports to files: Markdown, HTML, JSON, Chrome trace, console text.

This is what ``torchdoctor run`` and ``torchdoctor demo`` call at the end, and what
``torchdoctor report`` uses for one format. Advice is computed once (pure analysis) and stored
in the session copy that every format renders, so all files agree.

Example:
    >>> import tempfile
    >>> from torchdoctor.session import Session
    >>> paths = write_reports(Session.new("demo", with_environment=False), tempfile.mkdtemp())
    >>> sorted(p.suffix for p in paths)
    ['.html', '.json', '.md']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: format -> file suffix
SUFFIXES: dict[str, str] = {
    "md": ".md",
    "html": ".html",
    "json": ".json",
    "trace": ".trace.json",
    "console": ".txt",
}
DEFAULT_FORMATS = ("md", "html", "json")


def _renderer(fmt: str) -> Callable[[Mapping[str, Any]], str]:
    if fmt == "md":
        from torchdoctor.render.markdown import render_markdown

        return render_markdown
    if fmt == "html":
        from torchdoctor.render.html import render_html

        return render_html
    if fmt == "json":
        from torchdoctor.render.json import render_json

        return render_json
    if fmt == "trace":
        from torchdoctor.render.trace import render_trace

        return render_trace
    if fmt == "console":
        from torchdoctor.render.console import render_console

        return render_console
    raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(SUFFIXES)}")


def with_advice(session: Mapping[str, Any], lint: Sequence[Any] | None = None) -> dict[str, Any]:
    """A plain-dict copy of the session with ``advice`` (re)computed, and ``lint`` attached.

    Example:
        >>> with_advice({"schema_version": 1, "tree": None})["advice"]
        []
    """
    from torchdoctor.analyze.advice import advice_dicts

    data = session.to_dict() if hasattr(session, "to_dict") else dict(session)
    if lint is not None:
        from torchdoctor.analyze.advice.lint_hot import as_finding_dict

        data["lint"] = [as_finding_dict(f) for f in lint]
    data["advice"] = advice_dicts(data)
    return data


def render_report(session: Mapping[str, Any], fmt: str) -> str:
    """One report format as text (advice computed when the session has none).

    Example:
        >>> render_report({"schema_version": 1, "label": "x", "tree": None}, "md").splitlines()[0]
        '# torchdoctor report: x'
    """
    render = _renderer(fmt)
    data = dict(session.to_dict() if hasattr(session, "to_dict") else session)
    if not data.get("advice") and fmt != "trace":
        data = with_advice(data)
    return render(data)


def _write_atomic(path: Path, text: str) -> None:
    from torchdoctor.session import write_text_atomic

    write_text_atomic(path, text)


def write_reports(
    session: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    formats: Iterable[str] = DEFAULT_FORMATS,
    *,
    stem: str = "torchdoctor-report",
    lint: Sequence[Any] | None = None,
) -> list[Path]:
    """Render the session in each format to ``out_dir/<stem><suffix>``; returns the paths.

    ``formats``: any of "md", "html", "json", "trace" (Chrome trace), "console" (plain text).
    ``lint``: Findings (objects or dicts) to attach before advising (else ``session["lint"]`` is used).
    The JSON file is the session with its advice filled in, re-renderable with
    ``torchdoctor report``.

    Example:
        >>> import tempfile
        >>> [p.name for p in write_reports({"schema_version": 1, "tree": None},
        ...                                tempfile.mkdtemp(), ["md"], stem="s")]
        ['s.md']
    """
    formats = list(formats)
    for fmt in formats:
        _renderer(fmt)  # validate every format before writing anything
    if not isinstance(session, Mapping):
        raise TypeError(
            f"write_reports expects a Session or its dict, got {type(session).__name__}"
        )
    data = with_advice(session, lint)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = directory / f"{stem}{SUFFIXES[fmt]}"
        _write_atomic(path, _renderer(fmt)(data))
        written.append(path)
    return written

"""The renderer registry: report format -> file suffix -> render function, in one table.

:data:`RENDERERS` is the only list of report formats; ``torchdoctor report`` (its ``--format``
choices and the format implied by ``-o FILE``), ``torchdoctor run``/``demo`` and
:func:`torchdoctor.write_reports` all read it. A render function takes a session (with its
advice already computed: rendering never analyses) and returns text; it is imported only when
its format is used.

Example:
    >>> [(fmt, r.suffix) for fmt, r in RENDERERS.items()][:2]
    [('md', '.md'), ('html', '.html')]
    >>> renderer("json")({"schema_version": 1}).startswith("{")
    True
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Renderer:
    """One report format: the suffix of its files, other suffixes that imply it, and where its
    render function lives (``"module:function"``, imported on first use).

    Example:
        >>> Renderer(".md", "torchdoctor.render.markdown:render_markdown", (".markdown",)).suffix
        '.md'
    """

    suffix: str
    function: str
    aliases: tuple[str, ...] = ()


#: format -> Renderer. The one table of report formats.
RENDERERS: dict[str, Renderer] = {
    "md": Renderer(".md", "torchdoctor.render.markdown:render_markdown", (".markdown",)),
    "html": Renderer(".html", "torchdoctor.render.html:render_html", (".htm",)),
    "json": Renderer(".json", "torchdoctor.render.json:render_json"),
    "trace": Renderer(".trace.json", "torchdoctor.render.trace:render_trace", (".trace",)),
    "console": Renderer(".txt", "torchdoctor.render.console:render_console"),
}
#: what write_reports writes when no formats are given
DEFAULT_FORMATS = ("md", "html", "json")


def renderer(fmt: str) -> Callable[[Mapping[str, Any]], str]:
    """The render function of a format; ValueError naming the formats for an unknown one.

    Example:
        >>> renderer("md").__name__
        'render_markdown'
    """
    entry = RENDERERS.get(fmt)
    if entry is None:
        raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(RENDERERS)}")
    module, _, name = entry.function.partition(":")
    return getattr(importlib.import_module(module), name)


def infer_format(output: str | None) -> str:
    """The format implied by an output file name ('console' without one or for other names).

    The longest matching suffix wins, so ``r.trace.json`` is a trace, not JSON.

    Example:
        >>> infer_format("r.trace.json"), infer_format("r.HTML"), infer_format(None)
        ('trace', 'html', 'console')
    """
    if not output:
        return "console"
    name = output.lower()
    suffixes = [(s, fmt) for fmt, r in RENDERERS.items() for s in (r.suffix, *r.aliases)]
    for suffix, fmt in sorted(suffixes, key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return fmt
    return "console"


def write_rendered(
    data: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    formats: Iterable[str] = DEFAULT_FORMATS,
    *,
    stem: str = "torchdoctor-report",
) -> list[Path]:
    """Render ``data`` as given in each format to ``out_dir/<stem><suffix>``; returns the paths.

    Every format is checked before anything is written. Files are written atomically.

    Example:
        >>> import tempfile
        >>> [p.name for p in write_rendered({"schema_version": 1}, tempfile.mkdtemp(), ["json"])]
        ['torchdoctor-report.json']
    """
    from torchdoctor.session import write_text_atomic

    functions = {fmt: renderer(fmt) for fmt in formats}
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, render in functions.items():
        path = directory / f"{stem}{RENDERERS[fmt].suffix}"
        write_text_atomic(path, render(data))
        written.append(path)
    return written

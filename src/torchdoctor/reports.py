"""Reports of a session: analysis first (advice, lint findings), then rendering.

render/ only formats what it is given; this module is the step above it that ``torchdoctor
run``, ``demo`` and ``report`` (and :func:`torchdoctor.write_reports`) call: it computes the
advice once (pure analysis) into a plain-dict copy of the session, then renders that copy in
every format through the renderer registry (:data:`torchdoctor.render.reports.RENDERERS`), so
all files agree.

Example:
    >>> import tempfile
    >>> from torchdoctor.session import Session
    >>> paths = write_reports(Session.new("demo", with_environment=False), tempfile.mkdtemp())
    >>> sorted(p.suffix for p in paths)
    ['.html', '.json', '.md']
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torchdoctor.render.reports import DEFAULT_FORMATS, renderer, write_rendered

#: what `torchdoctor run --out DIR` and the framework callbacks write beside session.json
REPORT_FORMATS = ("md", "html")


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
    """One report format as text (advice computed first when the session has none).

    Example:
        >>> render_report({"schema_version": 1, "label": "x", "tree": None}, "md").splitlines()[0]
        '# torchdoctor report: x'
    """
    render = renderer(fmt)
    data = dict(session.to_dict() if hasattr(session, "to_dict") else session)
    if not data.get("advice") and fmt != "trace":
        data = with_advice(data)
    return render(data)


def write_reports(
    session: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    formats: Iterable[str] = DEFAULT_FORMATS,
    *,
    stem: str = "torchdoctor-report",
    lint: Sequence[Any] | None = None,
) -> list[Path]:
    """Advise, then render the session in each format to ``out_dir/<stem><suffix>``; the paths.

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
        renderer(fmt)  # validate every format before analysing or writing anything
    if not isinstance(session, Mapping):
        raise TypeError(
            f"write_reports expects a Session or its dict, got {type(session).__name__}"
        )
    return write_rendered(with_advice(session, lint), out_dir, formats, stem=stem)


def write_session(
    session: Any,
    out_dir: str | os.PathLike[str],
    *,
    script: str | None = None,
    reports: tuple[str, ...] = REPORT_FORMATS,
) -> Path:
    """Write everything that goes to ``--out``; returns the path of ``session.json``.

    The session is saved first, as collected, so a failure in anything after it (linting the
    script, advice, rendering) never loses what was measured. Then the script's static lint
    findings are attached (the advice ranks those on hot lines first), and the reports
    (``report.md``, ``report.html``) plus ``session.json`` with its advice are written.

    Example:
        >>> import tempfile
        >>> from torchdoctor.session import Session
        >>> write_session(Session.new(label="demo"), tempfile.mkdtemp()).name
        'session.json'
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = session.save(directory / "session.json")
    if not reports:
        return path
    try:
        from torchdoctor.session import Session

        if script:
            from torchdoctor.lint import attach_findings

            # the script and the files of its measured hot lines (a loss in a module of its own)
            attach_findings(session, lint_script(script, hot_line_files(session)))
        data = with_advice(session)
        session["advice"] = data["advice"]
        write_reports(data, directory, reports, stem="report")
        Session.from_dict(data).save(path)
    except Exception as exc:  # reports are extra: the session on disk is what matters
        print(f"torchdoctor: reports not written ({type(exc).__name__}: {exc}); the session is "
              f"in {path}: `torchdoctor report {path}` renders it again", file=sys.stderr)  # fmt: skip
    return path


def lint_script(script: str, more: Sequence[str] = ()) -> list[Any]:
    """The lint findings of the script and of ``more`` files (TD0xx, unparsable files, left out).

    Example:
        >>> import pathlib, tempfile
        >>> script = pathlib.Path(tempfile.mkdtemp()) / "train.py"
        >>> code = ["import torch", "cov = torch.eye(3)", "for x in torch.randn(5, 3):",
        ...         "    y = torch.linalg.solve(cov, x)"]
        >>> _ = script.write_text(chr(10).join(code))
        >>> [f.code for f in lint_script(str(script))]
        ['TD102']
    """
    from torchdoctor.collect.notebook import is_notebook, notebook_source
    from torchdoctor.lint import lint_paths

    paths = [script, *(p for p in more if not os.path.samefile(p, script))]
    found = []
    if is_notebook(script):  # a notebook: its code cells, as `run` ran them
        from torchdoctor.lint import lint_source

        found = lint_source(notebook_source(script), path=script)
        paths = paths[1:]
    found += lint_paths(paths) if paths else []
    return [f for f in found if not f.code.startswith("TD0")]


def hot_line_files(session: Mapping[str, Any], limit: int = 10) -> list[str]:
    """Existing files of the heaviest measured source lines (``session["hot_lines"]``).

    Example:
        >>> hot_line_files({"hot_lines": {"lines": [{"file": "/no/such.py"}]}})
        []
    """
    files: list[str] = []
    for line in ((session.get("hot_lines") or {}).get("lines") or ())[:limit]:
        file = str(line.get("file") or "")
        if file.endswith(".py") and os.path.isfile(file) and file not in files:
            files.append(file)
    return files

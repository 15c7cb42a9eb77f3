"""Text, JSON, SARIF 2.1.0 and GitHub Actions annotation output of lint findings (pure formatting, no I/O)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchdoctor._version import __version__
from torchdoctor.lint.finding import Finding, one_line
from torchdoctor.lint.registry import RULES

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
FORMATS = ("text", "json", "sarif", "github")
_GITHUB_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}




def format_text(findings: Sequence[Finding], statistics: bool = False) -> str:
    """flake8-style lines ``path:line:col: CODE message``, then a summary line; one line per
    finding (code quoted from several source lines is joined with spaces, so grep and editors'
    problem matchers read each finding whole).

    Example:
        >>> print(format_text([Finding("TD202", "warning", "m", "a.py", 1, 1, 1, 2)]))
        a.py:1:1: TD202 m
        Found 1 finding (0 fixable with --fix).
        >>> format_text([Finding("TD508", "info", "`f(\\n    x\\n)` m", "a.py", 1, 1, 3, 2)])[:22]
        'a.py:1:1: TD508 `f(x)`'
    """
    lines = [f"{f.location()}: {f.code} {one_line(f.message)}" for f in findings]
    if statistics and findings:
        counts = Counter(f.code for f in findings)
        lines.append("")
        for code, n in sorted(counts.items()):
            name = RULES[code].name if code in RULES else ""
            lines.append(f"{n:6d}  {code}  {name}")
    fixable = sum(f.fixable for f in findings)
    if findings:
        noun = "finding" if len(findings) == 1 else "findings"
        lines.append(f"Found {len(findings)} {noun} ({fixable} fixable with --fix).")
    return "\n".join(lines)


def format_json(findings: Sequence[Finding]) -> str:
    """A JSON list of Session ``Finding`` dicts.

    Example:
        >>> format_json([])
        '[]'
    """
    return json.dumps([f.to_dict() for f in findings], indent=2)


def _rule_descriptor(code: str) -> dict[str, Any]:
    rule = RULES[code]
    return {
        "id": code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": f"{rule.summary}. Fix: {rule.fix}."},
        "help": {
            "text": f"Fix: {rule.fix}.",
            "markdown": f"**Fix:** {rule.fix}\n\n"
            f"Before:\n```python\n{rule.bad}\n```\nAfter:\n```python\n{rule.good}\n```",
        },
        "helpUri": f"https://github.com/torchdoctor/torchdoctor/blob/main/docs/lint-rules.md#{code.lower()}",
        "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
        "properties": {"tags": ["performance", "pytorch"]},
    }


def to_sarif(findings: Sequence[Finding], root: str | Path | None = None) -> dict[str, Any]:
    """A SARIF 2.1.0 log (one run) that GitHub code scanning accepts.

    Paths are made relative to ``root`` (default: the current directory) when possible.

    Example:
        >>> to_sarif([])["version"]
        '2.1.0'
    """
    base = Path(root or Path.cwd()).resolve()
    codes = list(RULES)
    results = []
    for f in findings:
        path = Path(f.path)
        try:
            artifact = {
                "uri": path.resolve().relative_to(base).as_posix(),
                "uriBaseId": "%SRCROOT%",
            }
        except ValueError:  # outside the root: an absolute file URI
            artifact = {"uri": path.resolve().as_uri()}
        results.append(
            {
                "ruleId": f.code,
                "ruleIndex": codes.index(f.code) if f.code in RULES else -1,
                "level": _SARIF_LEVEL.get(f.severity, "warning"),
                "message": {"text": f.message},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": artifact,
                            "region": {
                                "startLine": f.line,
                                "startColumn": f.column,
                                "endLine": f.end_line,
                                "endColumn": max(f.end_column, f.column + 1)
                                if f.end_line == f.line
                                else f.end_column,
                            },
                        }
                    }
                ],
                "properties": {"replacement": f.replacement, "fixable": f.fixable},
            }
        )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "torchdoctor-lint",
                        "version": __version__,
                        "informationUri": "https://github.com/torchdoctor/torchdoctor",
                        "rules": [_rule_descriptor(c) for c in codes],
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": base.as_uri() + "/"}},
                "results": results,
            }
        ],
    }


def format_sarif(findings: Sequence[Finding], root: str | Path | None = None) -> str:
    """:func:`to_sarif` as indented JSON text.

    Example:
        >>> import json
        >>> sarif = json.loads(format_sarif([Finding("TD202", "warning", "m", "t.py", 3, 5, 3, 9)]))
        >>> sarif["version"], [r["ruleId"] for r in sarif["runs"][0]["results"]]
        ('2.1.0', ['TD202'])
    """
    return json.dumps(to_sarif(findings, root), indent=2)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_github(findings: Sequence[Finding]) -> str:
    """GitHub Actions workflow commands: one annotation per finding on the PR diff.

    Example:
        >>> print(format_github([Finding("TD202", "warning", "a, b", "t.py", 3, 5, 3, 9)]))
        ::warning file=t.py,line=3,col=5,endLine=3,endColumn=9,title=TD202 cuda-synchronize-in-training-loop::TD202 a, b
    """
    lines = []
    for f in findings:
        level = _GITHUB_LEVEL.get(f.severity, "warning")
        name = RULES[f.code].name if f.code in RULES else ""
        props = (
            f"file={_escape_property(f.path)},line={f.line},col={f.column},"
            f"endLine={f.end_line},endColumn={f.end_column},"
            f"title={_escape_property(f'{f.code} {name}'.strip())}"
        )
        lines.append(f"::{level} {props}::{_escape_data(f'{f.code} {f.message}')}")
    return "\n".join(lines)


def render(findings: Sequence[Finding], fmt: str, statistics: bool = False) -> str:
    """Format findings as ``text``, ``json``, ``sarif`` or ``github``; ValueError for another
    format.

    Example:
        >>> print(render([Finding("TD202", "warning", "sync here", "t.py", 3, 5, 3, 9)], "text"))
        t.py:3:5: TD202 sync here
        Found 1 finding (0 fixable with --fix).
    """
    if fmt == "text":
        return format_text(findings, statistics)
    if fmt == "json":
        return format_json(findings)
    if fmt == "sarif":
        return format_sarif(findings)
    if fmt == "github":
        return format_github(findings)
    raise ValueError(f"unknown lint output format {fmt!r}; expected one of {', '.join(FORMATS)}")

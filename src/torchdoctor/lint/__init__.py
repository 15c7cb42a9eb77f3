"""``torchdoctor lint``: static detection of the seed anti-patterns, with safe autofixes.

Example:
    >>> from torchdoctor.lint import lint_source
    >>> [f.code for f in lint_source("import torch\\ns = torch.cuda.amp.GradScaler()\\n")]
    ['TD504']
"""

from __future__ import annotations

from torchdoctor.lint.attach import attach_findings, findings_at
from torchdoctor.lint.finding import Finding
from torchdoctor.lint.formats import (
    format_github,
    format_json,
    format_sarif,
    format_text,
    to_sarif,
)
from torchdoctor.lint.registry import RULES, Rule, resolve_codes
from torchdoctor.lint.runner import (
    fix_paths,
    fix_source,
    iter_python_files,
    lint_paths,
    lint_source,
)

__all__ = [
    "RULES",
    "Finding",
    "Rule",
    "attach_findings",
    "findings_at",
    "fix_paths",
    "fix_source",
    "format_github",
    "format_json",
    "format_sarif",
    "format_text",
    "iter_python_files",
    "lint_paths",
    "lint_source",
    "resolve_codes",
    "to_sarif",
]

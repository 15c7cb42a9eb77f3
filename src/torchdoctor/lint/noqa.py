"""``# noqa`` / ``# noqa: TD101,TD2`` suppression comments (flake8 semantics)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torchdoctor.lint.finding import Finding

_NOQA = re.compile(
    r"#\s*noqa(?::[\s]?(?P<codes>[A-Z]+[0-9]*(?:[,\s]+[A-Z]+[0-9]*)*))?", re.IGNORECASE
)


def noqa_codes(line: str) -> set[str] | None:
    """Codes suppressed on ``line``: None when there is no noqa, an empty set for a bare
    ``# noqa`` (everything), else the listed codes or prefixes.

    Example:
        >>> sorted(noqa_codes("x.item()  # noqa: TD201, TD3"))
        ['TD201', 'TD3']
    """
    match = _NOQA.search(line)
    if match is None:
        return None
    codes = match.group("codes")
    if not codes:
        return set()
    return {c.upper() for c in re.split(r"[,\s]+", codes) if c}


def is_suppressed(finding: Finding, lines: Sequence[str]) -> bool:
    """True when a noqa comment on the finding's first or last line covers its code.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> (finding,) = lint_source("import torch\\ny = torch.linalg.inv(A) @ b\\n")
        >>> is_suppressed(finding, ["import torch", "y = torch.linalg.inv(A) @ b  # noqa: TD1"])
        True
        >>> is_suppressed(finding, ["import torch", "y = torch.linalg.inv(A) @ b  # noqa: TD2"])
        False
    """
    for number in {finding.line, finding.end_line}:
        if not 1 <= number <= len(lines):
            continue
        codes = noqa_codes(lines[number - 1])
        if codes is None:
            continue
        if not codes or any(finding.code.startswith(c) for c in codes):
            return True
    return False

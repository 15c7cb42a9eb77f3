"""The :class:`Finding` record produced by ``torchdoctor lint``.

A finding is plain data with the shape of the ``lint`` entries of a Session (see
docs/session-schema.md). Lines and columns are 1-based; ``end_column`` is exclusive, as in SARIF.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One static finding: which rule fired, where, and what replaces the pattern.

    Example:
        >>> f = Finding("TD202", "warning", "msg", "train.py", 3, 5, 3, 29)
        >>> f.to_dict()["code"], f.location()
        ('TD202', 'train.py:3:5')
    """

    code: str
    severity: str
    message: str
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    replacement: str | None = None
    fixable: bool = False
    #: (first, last) source lines of a pattern spread over several statements, when the
    #: finding is reported on one of them: TD507's scores line to its product with the values
    #: (a profile adds up the measured lines in between: the pattern's time)
    pattern_lines: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the Session ``Finding`` dict (JSON-serializable; ``pattern_lines`` only when
        the pattern spans lines).

        Example:
            >>> Finding("TD000", "error", "syntax", "a.py", 1, 1, 1, 2).to_dict()["line"]
            1
            >>> Finding("TD507", "info", "m", "a.py", 5, 1, 5, 9, pattern_lines=(4, 7)).to_dict()[
            ...     "pattern_lines"]
            [4, 7]
        """
        out = asdict(self)
        if self.pattern_lines is None:
            del out["pattern_lines"]
        else:
            out["pattern_lines"] = list(self.pattern_lines)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        """Build a finding from a Session ``Finding`` dict (unknown keys are ignored).

        Example:
            >>> d = Finding("TD000", "error", "syntax", "a.py", 1, 1, 1, 2).to_dict()
            >>> Finding.from_dict(d).code
            'TD000'
        """
        if not isinstance(data, dict):
            raise TypeError(
                f"a finding must be a dict, got {type(data).__name__}; pass Finding.to_dict()"
            )
        names = {f.name for f in fields(cls)}
        missing = {"code", "severity", "message", "path", "line", "column"} - set(data)
        if missing:
            raise ValueError(
                f"finding dict lacks {sorted(missing)}; expected the Session Finding shape "
                "(docs/session-schema.md)"
            )
        values = {k: v for k, v in data.items() if k in names}
        values.setdefault("end_line", values["line"])
        values.setdefault("end_column", values["column"])
        if values.get("pattern_lines") is not None:
            values["pattern_lines"] = tuple(values["pattern_lines"])
        return cls(**values)

    def location(self) -> str:
        """``path:line:column`` (1-based), as editors and flake8 print it."""
        return f"{self.path}:{self.line}:{self.column}"

    def sort_key(self) -> tuple[str, int, int, str]:
        """Order findings by file, position, then code."""
        return (self.path, self.line, self.column, self.code)


def one_line(message: str) -> str:
    """``message`` with each line break (and the indentation around it) made one space, none
    after an opening or before a closing bracket.

    Example:
        >>> one_line("hand-written softplus (`torch.log1p(\\n    torch.exp(x)\\n)`)")
        'hand-written softplus (`torch.log1p(torch.exp(x))`)'
    """
    text = re.sub(r"\s*\n\s*", "\n", message)
    text = re.sub(r"([(\[{])\n|\n([)\]}])", lambda m: m.group(1) or m.group(2), text)
    return text.replace("\n", " ")

"""A benchmark result table: plain data that renders to rich (terminal) and Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def format_cell(value: Any) -> str:
    """Format one cell: floats with 3 significant digits (more for big numbers), None as '-'.

    Example:
        >>> format_cell(1234.5), format_cell(0.012345), format_cell(None), format_cell(True)
        ('1,234', '0.0123', '-', 'yes')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 0.01 or magnitude == 0:
            return f"{value:.3g}" if magnitude < 1 else f"{value:.2f}"
        return f"{value:.2e}"
    return str(value)


@dataclass
class BenchTable:
    """A titled table of benchmark results.

    Example:
        >>> t = BenchTable("demo", ["case", "ms"], [["a", 1.5]])
        >>> print(t.to_markdown().splitlines()[2])
        | case | ms |
    """

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_row(self, *values: Any) -> None:
        if len(values) != len(self.columns):
            raise ValueError(
                f"row has {len(values)} values but table {self.title!r} has "
                f"{len(self.columns)} columns {self.columns}"
            )
        self.rows.append(list(values))

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(format_cell(v) for v in row) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def to_rich(self):
        from rich.table import Table

        table = Table(title=self.title, title_justify="left", caption="\n".join(self.notes) or None)
        for i, name in enumerate(self.columns):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in self.rows:
            table.add_row(*(format_cell(v) for v in row))
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
        }

"""flake8 plugin: ``flake8 --select TD`` runs torchdoctor's rules (entry point in pyproject)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence

from torchdoctor._version import __version__


class TorchDoctorFlake8:
    """flake8 checker; reports ``TDxxx`` codes (column is 0-based for flake8).

    Example:
        >>> lines = ["import torch\\n", "s = torch.cuda.amp.GradScaler()\\n"]
        >>> [r[2][:5] for r in TorchDoctorFlake8(None, lines).run()]
        ['TD504']
    """

    name = "torchdoctor"
    version = __version__

    def __init__(self, tree: ast.AST | None, lines: Sequence[str], filename: str = "<stdin>"):
        self.lines = lines
        self.filename = filename

    def run(self) -> Iterator[tuple[int, int, str, type]]:
        from torchdoctor.lint.runner import lint_source

        # flake8 applies its own noqa handling too; ours is harmless duplication.
        for f in lint_source("".join(self.lines), path=self.filename):
            yield f.line, f.column - 1, f"{f.code} {f.message}", type(self)

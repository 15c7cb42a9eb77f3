"""Configuration from ``[tool.torchdoctor.lint]`` in pyproject.toml.

Keys: ``select`` and ``ignore`` (lists of codes or prefixes), ``exclude`` (glob patterns of
paths to skip), ``per-file-ignores`` (glob -> list of codes). Command-line options win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

KEYS = {"select", "ignore", "exclude", "per-file-ignores"}


def find_pyproject(start: str | Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` (a file or a directory).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "pyproject.toml").write_text("[tool.torchdoctor.lint]\\n")
        >>> (root / "pkg").mkdir()
        >>> find_pyproject(root / "pkg" / "train.py") == root.resolve() / "pyproject.toml"
        True
    """
    here = Path(start).resolve()
    if here.is_file() or not here.exists():
        here = here.parent
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_config(pyproject: str | Path | None) -> dict[str, Any]:
    """Read and validate ``[tool.torchdoctor.lint]``; ``{}`` when absent.

    Example:
        >>> load_config(None)
        {}
    """
    if pyproject is None:
        return {}
    if _toml is None:  # pragma: no cover
        return {}
    path = Path(pyproject)
    try:
        data = _toml.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read lint configuration from {path}: {exc}") from exc
    section = data.get("tool", {}).get("torchdoctor", {}).get("lint", {})
    if not isinstance(section, dict):
        raise ValueError(f"[tool.torchdoctor.lint] in {path} must be a table")
    unknown = set(section) - KEYS
    if unknown:
        raise ValueError(
            f"unknown keys {sorted(unknown)} in [tool.torchdoctor.lint] of {path}; "
            f"expected some of {sorted(KEYS)}"
        )
    for key in ("select", "ignore", "exclude"):
        value = section.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise ValueError(
                f"[tool.torchdoctor.lint] {key} in {path} must be a list of strings, got {value!r}"
            )
    pfi = section.get("per-file-ignores", {})
    if not isinstance(pfi, dict) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in pfi.values()
    ):
        raise ValueError(
            f"[tool.torchdoctor.lint] per-file-ignores in {path} must map globs to lists of codes"
        )
    return dict(section)

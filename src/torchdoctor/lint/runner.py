"""Run the rule families over source text, files and directories."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from torchdoctor.lint.finding import Finding
from torchdoctor.lint.noqa import is_suppressed
from torchdoctor.lint.registry import RULES, resolve_codes
from torchdoctor.lint.rules_data import DataRules
from torchdoctor.lint.rules_inference import InferenceRules
from torchdoctor.lint.rules_linalg import LinalgRules
from torchdoctor.lint.rules_loops import LoopRules
from torchdoctor.lint.rules_precision import PrecisionRules
from torchdoctor.lint.rules_sync import SyncRules
from torchdoctor.lint.visitor import FileContext

#: every rule family, one visitor class each.
FAMILIES = (LinalgRules, SyncRules, LoopRules, DataRules, PrecisionRules, InferenceRules)
#: directories never entered when walking a folder (explicit file arguments are always read).
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".venv",
        "venv",
        "__pycache__",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "build",
        "dist",
        "node_modules",
        ".eggs",
    }
)
_USES_CUDA = re.compile(r"\.cuda\(|[\"']cuda(:\d+)?[\"']|non_blocking\s*=\s*True")


def _syntax_finding(path: str, exc: Exception, text: str) -> Finding:
    """TD000 for a file LibCST cannot parse; Python's own parser gives the clearer position."""
    line = getattr(exc, "raw_line", None) or getattr(exc, "lineno", None) or 1
    column = (getattr(exc, "raw_column", None) or 0) + 1
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        ast.parse(text)
    except SyntaxError as err:
        line, column = err.lineno or line, err.offset or column
        first = f"{err.msg} (line {line})"
    except (ValueError, RecursionError, MemoryError):
        pass
    return Finding(
        "TD000",
        RULES["TD000"].severity,
        f"syntax error, file not checked: {first}",
        path,
        line,
        column,
        line,
        column + 1,
    )


def families_for(text: str, codes: set[str]) -> list[type]:
    """Rule families that are selected and whose trigger text occurs in the source."""
    return [cls for cls in FAMILIES if codes & set(cls.CODES) and cls.applies(text)]


def _parse(raw: str | bytes, text: str, path: str, codes: set[str]):
    """``(module, [])`` or ``(None, findings)``; files no family applies to are only
    syntax-checked (by Python's parser, much cheaper than LibCST's)."""
    if not families_for(text, codes):
        try:
            ast.parse(raw)
        except (SyntaxError, ValueError) as exc:
            return None, ([_syntax_finding(path, exc, text)] if "TD000" in codes else [])
        return None, []
    try:
        return cst.parse_module(raw), []
    except (cst.ParserSyntaxError, SyntaxError, ValueError, RecursionError) as exc:
        return None, ([_syntax_finding(path, exc, text)] if "TD000" in codes else [])


def lint_module(
    module: cst.Module, text: str, path: str = "<string>", codes: set[str] | None = None
) -> list[Finding]:
    """Run the selected families over a parsed module; noqa comments are honoured."""
    codes = set(RULES) if codes is None else codes
    context = FileContext(path=path, source=text, uses_cuda=bool(_USES_CUDA.search(text)))
    visitors = [cls(context) for cls in families_for(text, codes)]
    found: list[Finding] = []
    if visitors:
        wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
        wrapper.visit_batched(visitors)
        if any(v.pending for v in visitors):
            positions = wrapper.resolve(PositionProvider)
            for visitor in visitors:
                found += visitor.resolve_findings(positions)
    lines = text.splitlines()
    seen: set[tuple[str, int, int]] = set()
    out = []
    if found:
        for finding in found:
            key = (finding.code, finding.line, finding.column)
            if finding.code in codes and key not in seen and not is_suppressed(finding, lines):
                seen.add(key)
                out.append(finding)
    return sorted(out, key=Finding.sort_key)


def lint_source(
    text: str | bytes,
    path: str = "<string>",
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
) -> list[Finding]:
    """Lint one source text; a syntax error is reported as a TD000 finding.

    Example:
        >>> src = "import torch as T\\ny = T.linalg.inv(A) @ b\\n"
        >>> [f.code for f in lint_source(src)]
        ['TD101']
    """
    codes = resolve_codes(select, ignore)
    raw = text
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    module, findings = _parse(raw, text, path, codes)
    return findings if module is None else lint_module(module, text, path, codes)


def iter_python_files(
    paths: Sequence[str | os.PathLike], exclude: Sequence[str] = ()
) -> Iterator[str]:
    """Python files named by ``paths`` (folders are walked, sorted); a missing path raises.

    Example:
        >>> list(iter_python_files([__file__]))[0].endswith("runner.py")
        True
    """
    missing = [str(p) for p in paths if not os.path.exists(p)]
    if missing:
        raise ValueError(f"path(s) not found: {', '.join(missing)}; pass existing files or folders")

    def excluded(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(Path(path).name, pat) for pat in exclude
        )

    for root in paths:
        root = os.fspath(root)
        if os.path.isfile(root):
            if not excluded(root):
                yield root
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(
                d
                for d in dirs
                if d not in SKIP_DIRS
                and not d.endswith(".egg-info")
                and not excluded(os.path.join(folder, d))
            )
            for name in sorted(files):
                full = os.path.join(folder, name)
                if name.endswith(".py") and not excluded(full):
                    yield full


def lint_file(
    path: str, codes: set[str], fix: bool = False
) -> tuple[list[Finding], bytes | None, bytes | None]:
    """Lint one file. With ``fix``, also return its original and fixed bytes (same if no fix).

    Any unexpected exception inside the linter becomes a TD000 finding naming it, so one
    odd file never stops a run.
    """
    from torchdoctor.lint.fixes import apply_fixes

    raw = Path(path).read_bytes()
    text = raw.decode("utf-8", errors="replace")
    module, findings = _parse(raw, text, path, codes)
    if module is None:
        return findings, None, None
    try:
        findings = lint_module(module, text, path, codes)
        if not fix:
            return findings, None, None
        allowed = {(f.line, f.column, f.code) for f in findings if f.fixable}
        fixed = apply_fixes(module, allowed).bytes if allowed else raw
        return findings, raw, fixed
    except Exception as exc:  # noqa: BLE001 - reported, never swallowed silently
        return (
            [
                Finding(
                    "TD000",
                    "error",
                    f"internal error in torchdoctor lint ({type(exc).__name__}: "
                    f"{exc}); please report it",
                    path,
                    1,
                    1,
                    1,
                    2,
                )
            ],
            None,
            None,
        )


def _lint_file_job(args: tuple[str, frozenset[str], bool]):
    return lint_file(args[0], set(args[1]), args[2])


def _per_file_codes(path: str, codes: set[str], per_file_ignores: dict[str, list[str]]) -> set[str]:
    out = set(codes)
    for pattern, ignored in per_file_ignores.items():
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(Path(path).name, pattern):
            out -= {c for c in RULES if any(c.startswith(i.strip().upper()) for i in ignored)}
    return out


def lint_paths(
    paths: Sequence[str | os.PathLike],
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    *,
    exclude: Sequence[str] = (),
    per_file_ignores: dict[str, list[str]] | None = None,
    jobs: int = 1,
) -> list[Finding]:
    """Lint files and folders; returns all findings sorted by path and position.

    Raises ValueError for a missing path or an unknown code.

    Example:
        >>> import torchdoctor.lint.registry as r
        >>> lint_paths([r.__file__])
        []
    """
    return [
        f
        for f, _, _ in _run(paths, select, ignore, exclude, per_file_ignores, jobs, False)
        for f in f
    ]


def _run(paths, select, ignore, exclude, per_file_ignores, jobs, fix):
    codes = resolve_codes(select, ignore)
    files = list(iter_python_files(paths, exclude))
    work = [(p, frozenset(_per_file_codes(p, codes, per_file_ignores or {})), fix) for p in files]
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_lint_file_job, work, chunksize=8))
    else:
        results = [_lint_file_job(w) for w in work]
    return [
        (sorted(r[0], key=Finding.sort_key), path, r[1:]) for (path, _, _), r in zip(work, results)
    ]


def fix_paths(
    paths: Sequence[str | os.PathLike],
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    *,
    exclude: Sequence[str] = (),
    per_file_ignores: dict[str, list[str]] | None = None,
    jobs: int = 1,
) -> list[tuple[str, list[Finding], bytes, bytes]]:
    """Lint and compute fixes; returns ``(path, findings, original, fixed)`` per file with a
    fixable finding. Nothing is written (the CLI writes or diffs)."""
    out = []
    for findings, path, (original, fixed) in _run(
        paths, select, ignore, exclude, per_file_ignores, jobs, True
    ):
        out.append((path, findings, original, fixed))
    return out

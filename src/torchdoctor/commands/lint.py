"""``torchdoctor lint PATH...``: static anti-pattern checks with safe autofixes.

Exit codes: 0 clean, 1 findings remain, 2 usage error (unknown code, missing path, bad config).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

HELP = "static check for the seed anti-patterns (TD codes), with --fix/--diff"


def _codes(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``torchdoctor lint``.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="torchdoctor lint")
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["src/", "--select", "TD2,TD301", "--diff"])
        >>> args.paths, args.select, args.diff, args.fix
        (['src/'], ['TD2', 'TD301'], True, False)
    """
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to check")
    parser.add_argument(
        "--select", type=_codes, help="comma-separated codes or prefixes (TD2,TD301)"
    )
    parser.add_argument("--ignore", type=_codes, help="comma-separated codes or prefixes to skip")
    parser.add_argument(
        "--exclude", type=_codes, default=None, help="comma-separated glob patterns"
    )
    parser.add_argument(
        "--format",
        choices=("text", "json", "sarif", "github"),
        default="text",
        help="text (flake8 style), json, sarif (code scanning), github (PR annotations)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fix", action="store_true", help="apply safe fixes to the files")
    group.add_argument(
        "--diff", action="store_true", help="print the fixes as a diff; write nothing"
    )
    parser.add_argument("--config", help="pyproject.toml to read [tool.torchdoctor.lint] from")
    parser.add_argument("--no-config", action="store_true", help="ignore pyproject.toml")
    parser.add_argument("--statistics", action="store_true", help="count findings per code")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--exit-zero", action="store_true", help="exit 0 even with findings")


def run(args: argparse.Namespace) -> int:
    """Lint (or fix) the paths and print the findings; 1 when there are any, 2 on bad input.

    Example:
        >>> import argparse, pathlib, tempfile
        >>> clean = pathlib.Path(tempfile.mkdtemp()) / "clean.py"
        >>> _ = clean.write_text("x = 1\\n")
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> run(parser.parse_args([str(clean), "--no-config"]))
        0
    """
    from torchdoctor.lint.config import find_pyproject, load_config
    from torchdoctor.lint.formats import render
    from torchdoctor.lint.runner import fix_paths, lint_paths

    try:
        if args.no_config:
            config = {}
        else:
            config = load_config(args.config or find_pyproject(args.paths[0]))
        select = args.select if args.select is not None else config.get("select")
        ignore = [*(config.get("ignore") or []), *(args.ignore or [])]
        exclude = [*(config.get("exclude") or []), *(args.exclude or [])]
        options = dict(
            exclude=exclude,
            per_file_ignores=config.get("per-file-ignores") or {},
            jobs=max(1, args.jobs),
        )
        if args.fix or args.diff:
            results = fix_paths(args.paths, select, ignore, **options)
        else:
            findings = lint_paths(args.paths, select, ignore, **options)
    except ValueError as exc:
        print(f"torchdoctor lint: error: {exc}", file=sys.stderr)
        return 2

    if args.fix or args.diff:
        findings = []
        for path, file_findings, original, fixed in results:
            if original is None or fixed is None or original == fixed:
                findings.extend(file_findings)
                continue
            if args.diff:
                before = original.decode("utf-8", errors="replace").splitlines(keepends=True)
                after = fixed.decode("utf-8", errors="replace").splitlines(keepends=True)
                sys.stdout.writelines(difflib.unified_diff(before, after, path, path))
                findings.extend(file_findings)
            else:
                Path(path).write_bytes(fixed)
                # What remains after fixing is what we report.
                findings.extend(f for f in file_findings if not f.fixable)
                print(f"fixed {sum(f.fixable for f in file_findings)} in {path}", file=sys.stderr)

    text = render(findings, args.format, statistics=args.statistics)
    if text:
        print(text)
    return 0 if args.exit_zero or not findings else 1

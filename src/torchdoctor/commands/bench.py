"""`torchdoctor bench [SUITE...]`: run registered benchmark suites and print their tables."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

HELP = "run registered benchmark suites and print (or write) their tables"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``torchdoctor bench``.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="torchdoctor bench")
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["ops", "--quick", "--threads", "2"])
        >>> args.suites, args.quick, args.threads
        (['ops'], True, 2)
    """
    from torchdoctor.measure.suites import suite_names

    names = ", ".join(suite_names())
    parser.add_argument(
        "suites", nargs="*", metavar="SUITE", help=f"suites to run (default: all): {names}"
    )
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (seconds, for smoke runs)"
    )
    parser.add_argument(
        "--markdown", metavar="FILE", help="also write the tables as Markdown to FILE"
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads before running")


def environment_lines() -> list[str]:
    """Two lines naming what the tables were measured on (torch, threads, device).

    Example:
        >>> environment_lines()[0].startswith("torch ")
        True
    """
    import torch

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    return [
        f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}",
        f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}, device {device}",
    ]


def run(args: argparse.Namespace) -> int:
    """Run the selected suites and print (and optionally write) their tables.

    Example:
        >>> import argparse, contextlib, io
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> with contextlib.redirect_stdout(io.StringIO()):
        ...     status = run(parser.parse_args(["no-such-suite"]))
        >>> status
        2
    """
    from rich.console import Console
    from rich.progress import Progress

    from torchdoctor.measure.suites import load_suite, suite_names

    console = Console()
    if args.list:
        from torchdoctor.measure.suites import SUITES

        for name, modules in SUITES.items():
            console.print(f"{name}: {', '.join(m.rsplit('.', 1)[-1] for m in modules)}")
        return 0
    selected = args.suites or suite_names()
    unknown = [s for s in selected if s not in suite_names()]
    if unknown:
        console.print(
            f"[red]error:[/red] unknown suite(s) {', '.join(unknown)}; known: {', '.join(suite_names())}"
        )
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    tables = []
    started = time.perf_counter()
    jobs = [(suite, name, fn) for suite in selected for name, fn in load_suite(suite)]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarks", total=len(jobs))
        for suite, name, fn in jobs:
            progress.update(task, description=f"{suite}/{name}")
            for table in fn(quick=args.quick):
                tables.append((suite, table))
                progress.console.print(table.to_rich())
            progress.advance(task)
    elapsed = time.perf_counter() - started
    console.print(f"[dim]{len(jobs)} benchmark(s) in {elapsed:.1f} s[/dim]")
    if args.markdown:
        command = "torchdoctor bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        lines = ["# torchdoctor benchmarks", "", f"Command: `{command.strip()}`", ""]
        lines += [f"- {line}" for line in environment_lines()] + [""]
        for suite, table in tables:
            lines.append(f"<!-- suite: {suite} -->")
            lines.append(table.to_markdown())
        Path(args.markdown).write_text("\n".join(lines))
        console.print(f"wrote {args.markdown}")
    return 0

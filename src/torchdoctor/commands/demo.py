"""`torchdoctor demo [WORKLOAD]`: a built-in slow workload, diagnosed, then fixed and verified.

1. profiles the slow variant (module tree with forward/backward, phases, host syncs),
2. prints the top findings (torchdoctor's advice rules),
3. runs the fast variant interleaved with the slow one and prints the measured speedup,
4. checks that the fast variant computes what the slow one does,
5. writes the session JSON and the reports (Markdown, HTML, trace) into ``--out``.

Example (shell)::

    torchdoctor demo                      # part_contrastive (seed 000)
    torchdoctor demo diffusion_policy --out /tmp/td
    torchdoctor demo --list
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HELP = "profile a built-in slow workload, print the findings, then run and verify its fast version"
DEFAULT_WORKLOAD = "part_contrastive"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``torchdoctor demo``.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="torchdoctor demo")
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["token_pruning", "--scale", "tiny"])
        >>> args.workload, args.scale, args.list
        ('token_pruning', 'tiny', False)
    """
    parser.add_argument(
        "workload",
        nargs="?",
        default=DEFAULT_WORKLOAD,
        help=f"which workload (default {DEFAULT_WORKLOAD}; see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    parser.add_argument(
        "--out", default="torchdoctor-out", help="output folder (default ./torchdoctor-out)"
    )
    parser.add_argument(
        "--scale",
        choices=("tiny", "cpu", "seed"),
        default="cpu",
        help="sizes: tiny (seconds), cpu (default), seed (the seed's real sizes, for a GPU)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--steps", type=int, help="profiled steps of the slow variant (default: per workload)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved slow/fast pairs to time (default 3)"
    )
    parser.add_argument("--no-syncs", action="store_true", help="skip the host-sync audit")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the CPU-scale workloads are many small ops, "
        "which extra threads slow down, badly so when another process shares the cores)",
    )


def _list(console) -> int:
    from torchdoctor.workloads import WORKLOADS

    width = max(map(len, WORKLOADS))
    for name, (_, _, summary) in WORKLOADS.items():
        console.print(f"{name:<{width}}  {summary}", highlight=False, markup=False, soft_wrap=True)
    return 0


def _profile(workload, args, console):
    import torchdoctor

    target = workload.profile_target("slow")
    steps = args.steps or workload.demo_steps
    console.print(f"[bold]1. profiling the slow variant[/] ({steps} steps after 1 warm-up) ...")
    return torchdoctor.profile(
        target.step_fn,
        model=target.model,
        steps=steps,
        warmup=1,
        inference_fn=target.inference_fn,
        syncs=not args.no_syncs,
        label=target.label,
    )


def _findings(session, console) -> dict[str, Any]:
    """Advice filled in, the console report printed; returns the session dict with advice."""
    from torchdoctor.render.console import console_renderables
    from torchdoctor.reports import with_advice

    data = with_advice(session)
    for item in console_renderables(data, width=console.width):  # (tree columns fit it)
        console.print(item)
    return data


def _compare(workload, repeats: int, console) -> list[dict[str, Any]]:
    from torchdoctor.measure import compare

    console.print(f"[bold]3. timing slow vs fast[/] (interleaved, {repeats} pairs) ...")
    results = []
    for name, baseline, candidate in workload.comparisons():
        names = ("fast", "floor") if "floor" in name else ("slow", "fast")
        result = compare(baseline, candidate, warmup=1, repeats=repeats, check=False, names=names)
        console.print(f"   {name}: {result.summary()}", highlight=False, markup=False)
        results.append(
            {
                "name": name,
                "baseline_ms": result.baseline_ms,
                "candidate_ms": result.candidate_ms,
                "speedup": result.speedup,
                "speedup_min": result.speedup_min,
                "speedup_max": result.speedup_max,
                "error": result.error,
            }
        )
    return results


def run(args: argparse.Namespace) -> int:
    """Profile the slow variant, show the advice, then run and verify the fast one.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> run(parser.parse_args(["no_such_workload"]))  # the error names the workloads
        2
    """
    from rich.console import Console

    from torchdoctor.workloads import WORKLOADS, build

    console = Console()
    if args.list:
        return _list(console)
    if args.workload not in WORKLOADS:
        print(
            f"torchdoctor demo: unknown workload {args.workload!r}; choose one of "
            f"{', '.join(WORKLOADS)} (torchdoctor demo --list)",
            file=sys.stderr,
        )
        return 2
    if args.repeats < 1 or (args.steps is not None and args.steps < 1) or args.threads < 1:
        print("torchdoctor demo: --steps, --repeats and --threads must be >= 1", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    workload = build(args.workload, scale=args.scale, device=args.device)
    console.rule(f"torchdoctor demo: {workload.name}")
    console.print(workload.describe(), highlight=False, markup=False)

    session = _profile(workload, args, console)
    console.print("[bold]2. findings[/]")
    data = _findings(session, console)

    comparisons = _compare(workload, args.repeats, console)

    console.print("[bold]4. equivalence[/] ...")
    report = workload.check_equivalence()
    console.print(report.summary(), highlight=False, markup=False)

    out = Path(args.out)
    from torchdoctor.reports import write_reports

    paths = write_reports(data, out, stem=f"{workload.name}-slow")
    summary = {
        "workload": workload.name,
        "scale": args.scale,
        "config": repr(workload.config),
        "comparisons": comparisons,
        "equivalence": report.to_dict(),
    }
    summary_path = out / f"{workload.name}-demo.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    console.print("[bold]5. written[/]")
    for path in [*paths, summary_path]:
        console.print(f"   {path}", highlight=False, markup=False, soft_wrap=True)
    first = comparisons[0]
    if first["speedup"] is not None:
        console.print(
            f"[bold]{workload.name}: fast is {first['speedup']:.1f}x the slow variant "
            f"({first['baseline_ms']:.1f} ms -> {first['candidate_ms']:.1f} ms per step), "
            f"{'equivalent' if report.equivalent else 'NOT equivalent'}[/] "
            f"(demo took {time.perf_counter() - started:.0f} s)"
        )
    return 0 if report.equivalent else 1

#!/usr/bin/env python3
"""`make gpu-check`: every CUDA path of torchdoctor verified in one go on a lent GPU machine.

Runs with the machine's own Python and its CUDA build of torch: it never creates a venv and
never downloads anything. torchdoctor is imported from this checkout (``PYTHONPATH=src``). A
pure-Python dependency the machine lacks (libcst, say) is installed from a local folder of
wheels when one is there (``GPU_WHEELS``, default ``.gpu-wheels/``; fill it beforehand with
``make gpu-wheels GPU_PY=3.12``: wheels for the GPU machine's Python, not this one's).

Steps, each with a time limit so the whole check stays under 8 minutes:
  1. the ``cuda``-marked tests  -> OUT/cuda-tests.xml (JUnit) and OUT/cuda-tests.log
  2. the GPU benchmark suite    -> OUT/gpu-bench.md (``torchdoctor bench gpu``)
  3. OUT/SUMMARY.md: device, versions, test counts, failures, the tables (the text to paste
     into BENCHMARKS.md's GPU section, marked with the device)

Without CUDA it is a dry run: it says so, counts the tests it would run and exits 0.

    python3 tools/gpu_check.py [--out gpu-check-results] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("torch", "numpy", "scipy", "rich", "libcst", "pytest")
OPTIONAL = ("hypothesis", "numba", "transformers", "lightning")
TEST_LIMIT_S = 270
BENCH_LIMIT_S = 240


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _install_missing(wheels: Path) -> list[str]:
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing and wheels.is_dir():
        print(f"gpu-check: installing {', '.join(missing)} from {wheels} (no network)")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
             *missing],
            check=False,
        )  # fmt: skip
        importlib.invalidate_caches()
        missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    return missing


def _run(cmd: list[str], log: Path, limit: float) -> tuple[int, float]:
    start = time.monotonic()
    with log.open("w") as out:
        try:
            code = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                  timeout=limit).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            out.write(f"\ngpu-check: stopped after {limit:.0f} s (time limit)\n")
            code = 124
    return code, time.monotonic() - start


def _junit_counts(path: Path) -> tuple[dict[str, int], list[str]]:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    if not path.exists():
        return counts, failed
    root = ET.parse(path).getroot()
    for suite in root.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    for case in root.iter("testcase"):
        for bad in ("failure", "error"):
            node = case.find(bad)
            if node is not None:
                message = (
                    (node.get("message") or "").splitlines()[0][:200] if node.get("message") else ""
                )
                failed.append(f"{case.get('classname')}::{case.get('name')} ({bad}): {message}")
    return counts, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check-results", help="folder for the results")
    parser.add_argument("--quick", action="store_true", help="small benchmark sizes")
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    missing = _install_missing(Path(os.environ.get("GPU_WHEELS", ROOT / ".gpu-wheels")))
    if "torch" in missing:
        print("gpu-check: torch is not installed for this Python; use the machine's CUDA build")
        return 2
    import torch

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "none"
    header = [
        f"- device: {device}",
        f"- torch {torch.__version__}, CUDA build {torch.version.cuda}, Python "
        f"{platform.python_version()}",
        f"- optional packages present: "
        f"{', '.join(n for n in OPTIONAL if importlib.util.find_spec(n)) or 'none'}",
    ]
    if missing:
        header.append(f"- missing (tests needing them fail): {', '.join(missing)}")
    pytest_cmd = [sys.executable, "-m", "pytest", "tests", "-m", "cuda", "-p", "no:cacheprovider",
                  "-o", "addopts=", "--ignore=tests/lint_fixtures"]  # fmt: skip
    if not cuda:
        listed = subprocess.run([*pytest_cmd, "--collect-only", "-q"], cwd=ROOT, env=_env(),
                                capture_output=True, text=True)  # fmt: skip
        count = sum(1 for line in listed.stdout.splitlines() if "::" in line)
        message = (
            f"gpu-check: DRY RUN - no CUDA device here (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda}). On a GPU machine it would run {count} cuda-marked tests and "
            f"the GPU benchmark suite, writing {out}/SUMMARY.md. Nothing was measured."
        )
        print(message)
        (out / "SUMMARY.md").write_text(
            f"# gpu-check: dry run\n\n{message}\n\n" + "\n".join(header) + "\n"
        )
        return 0

    print(f"gpu-check on {device}: cuda tests (<= {TEST_LIMIT_S} s) ...", flush=True)
    junit = out / "cuda-tests.xml"
    test_code, test_s = _run([*pytest_cmd, "-q", "-rfEs", f"--junitxml={junit}"],
                             out / "cuda-tests.log", TEST_LIMIT_S)  # fmt: skip
    counts, failed = _junit_counts(junit)
    print(f"  {counts} in {test_s:.0f} s", flush=True)

    print(f"gpu-check: benchmark suite 'gpu' (<= {BENCH_LIMIT_S} s) ...", flush=True)
    bench_cmd = [sys.executable, "-m", "torchdoctor", "bench", "gpu",
                 "--markdown", str(out / "gpu-bench.md")] + (["--quick"] if args.quick else [])  # fmt: skip
    bench_code, bench_s = _run(bench_cmd, out / "gpu-bench.log", BENCH_LIMIT_S)
    tables = (out / "gpu-bench.md").read_text() if (out / "gpu-bench.md").exists() else ""

    lines = [f"# gpu-check on {device} ({time.strftime('%Y-%m-%d')})", "", *header, "",
             "## cuda-marked tests", "",
             f"{counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']} passed, "
             f"{counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped "
             f"({test_s:.0f} s, exit {test_code})", ""]  # fmt: skip
    lines += [f"- FAILED {name}" for name in failed]
    lines += ["", f"## GPU benchmarks (exit {bench_code}, {bench_s:.0f} s)", "", tables or
              "(no tables: see gpu-bench.log)"]  # fmt: skip
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    print((out / "SUMMARY.md").read_text())
    return 0 if test_code == 0 and bench_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

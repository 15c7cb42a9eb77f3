"""`make gpu-check` without a GPU: a dry run that says so and counts the cuda tests it would run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine gpu-check really runs")
def test_gpu_check_dry_runs_on_cpu_with_a_clear_message(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--out", str(tmp_path / "gpu")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "DRY RUN - no CUDA device here" in done.stdout
    count = int(re.search(r"would run (\d+) cuda-marked tests", done.stdout).group(1))
    assert count >= 15
    summary = (tmp_path / "gpu" / "SUMMARY.md").read_text()
    assert "Nothing was measured" in summary and "device: none" in summary


def test_gpu_suite_is_registered_and_explains_a_missing_gpu():
    from torchdoctor.measure.suites import load_suite

    (name, run), (overhead_name, overhead_run) = load_suite("gpu")
    assert (name, overhead_name) == ("gpu", "gpu_overhead")
    if not torch.cuda.is_available():
        [table] = run(quick=True)
        assert table.title == "GPU suite: no CUDA device"
        assert "make gpu-check" in " ".join(table.notes)
        assert overhead_run(quick=True) == []  # the first module's table says why


def test_gpt_overhead_tables_take_a_device():
    """The GPU suite's tables are the overhead suite's on ``cuda``: the same code on the CPU."""
    from torchdoctor.benchmarks.profiler_gpt import detailed_vs_torch_profiler, long_run_table

    table = long_run_table("tiny", steps=2, rounds=1, user_code=False, device="cpu")
    assert [row[0] for row in table.rows][:2] == ["plain", "Profiler(syncs=False) (windows)"]
    detailed = detailed_vs_torch_profiler("tiny", rounds=1, user_code=False, device="cpu")
    assert "torch.profiler (CPU)" in [row[0] for row in detailed.rows]
    with pytest.raises((RuntimeError, AssertionError, ValueError)):
        long_run_table("tiny", steps=1, rounds=1, device="no-such-device")

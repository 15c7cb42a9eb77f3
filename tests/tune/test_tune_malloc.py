"""The ``malloc_cache`` knob: a trial's process starts with glibc's mmap and trimming off, so a
step that allocates a large buffer afresh stops paying the kernel's zero-fill of its pages; it
is tried only when the baseline's steps spent a share of their CPU time in the kernel."""

from __future__ import annotations

import os
import platform
import sys
import textwrap

import pytest
import torch

import torchdoctor
from torchdoctor.tuning.knobs import KNOB_BY_NAME
from torchdoctor.tuning.trial import run_trial

FRESH_BUFFER_TRAIN = """
import os
import torch
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "malloc_env.txt"),
          "w") as f:  # what glibc read at this process's start
    f.write(f"{os.environ.get('MALLOC_MMAP_MAX_')} {os.environ.get('MALLOC_TRIM_THRESHOLD_')}")
torch.set_num_threads(1)
net = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x = torch.randn(32, 8)
while True:
    opt.zero_grad()
    big = torch.empty(10 * 2**20).fill_(1.0)  # 40 MiB: over glibc's largest mmap threshold (32 MiB), under a thread arena's heap (64 MiB)
    loss = net(x).mean() + 0.0 * big[0]
    loss.backward()
    opt.step()
    del big
"""
PAGES = 40 * 2**20 // 4096

glibc = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc"
    or "MALLOC_MMAP_MAX_" in os.environ or "malloc" in os.environ.get("LD_PRELOAD", ""),
    reason="glibc's default malloc (a fresh mmap per large buffer)",
)


def _faults_per_step(result: dict) -> float:
    kernel = result["kernel"]
    return kernel["minor_faults"] / kernel["steps"]


@glibc
def test_the_knob_starts_the_trial_with_mmap_off_and_the_faults_go(tmp_path):
    script = tmp_path / "fresh.py"
    script.write_text(textwrap.dedent(FRESH_BUFFER_TRAIN))
    base = run_trial(str(script), [], [], workdir=tmp_path, warmup=3, steps=4, timeout=120)
    assert base["error"] is None, base
    assert (tmp_path / "malloc_env.txt").read_text() == "None None"
    assert _faults_per_step(base) >= 0.9 * PAGES and base["kernel"]["sys_ms"] > 0.0
    observed = {**base["observed"], "kernel": base["kernel"]}
    assert KNOB_BY_NAME["malloc_cache"].applies(observed) is None
    # (the heap grows twice before the freed block is reused: warm-up past it)
    cached = run_trial(str(script), [], ["malloc_cache"], workdir=tmp_path, warmup=8, steps=8,
                       timeout=120)  # fmt: skip
    assert cached["error"] is None, cached
    assert (tmp_path / "malloc_env.txt").read_text() == "0 100000000000"
    # (how many of this loop's steps then reuse the heap's pages varies from run to run: the
    # allocations around the buffer move the heap's top; build-nanogpt's 264k faults a step
    # went to a few hundred, BENCHMARKS.md)
    assert _faults_per_step(cached) <= _faults_per_step(base)


def test_a_step_with_little_kernel_time_is_not_tried():
    kernel = {"sys_ms": 30.0, "user_ms": 970.0, "minor_faults": 200, "steps": 10}
    reason = KNOB_BY_NAME["malloc_cache"].applies({"device": "cpu", "kernel": kernel,
                                                   "libc": "glibc"})  # fmt: skip
    assert reason is not None and "3% of the process's CPU time in the kernel" in reason
    assert "CUDA" in str(KNOB_BY_NAME["malloc_cache"].applies({"device": "cuda"}))
    assert KNOB_BY_NAME["malloc_cache"].applies({"device": "cpu", "libc": "glibc"})


def test_the_in_process_tune_leaves_it_to_a_fresh_process():
    net = torch.nn.Linear(4, 1)
    session = torchdoctor.tune(lambda: net(torch.ones(2, 4)).sum(), model=net,
                               knobs=["malloc_cache"], steps=2, warmup=1, rounds=1)  # fmt: skip
    (row,) = session["tune"]["rows"]
    assert row["status"] == "skipped" and "when the process starts" in row["reason"]

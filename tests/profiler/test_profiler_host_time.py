"""Every step records where the profiled thread's time went: on a core (``cpu_ms``) and, on
Linux, ready to run with no core free (``cpu_wait_ms``); the rest it was blocked. And the
process's kernel and user time (``sys_ms``, ``user_ms``) and minor page faults
(``minor_faults``)."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
import torch

import torchdoctor
from torchdoctor.collect.host_time import ThreadTimes, host_figures


def test_each_step_records_its_time_on_a_core_and_a_sleep_is_no_cpu_time():
    net = torch.nn.Linear(8, 8)
    with torchdoctor.Profiler(net, syncs=False, window=1, period_steps=100) as prof:
        for i in range(6):
            net(torch.ones(4, 8)).sum().backward()
            if i == 3:
                time.sleep(0.05)  # blocked: not on a core, not waiting for one
            prof.step()
    steps = prof.session["steps"]
    assert [s["detailed"] for s in steps][:2] == [True, False]  # light steps too
    assert all(0.0 <= s["cpu_ms"] <= s["wall_ms"] * 1.05 + 0.05 for s in steps)
    slept = next(s for s in steps if s["index"] == 3)
    assert slept["wall_ms"] >= 50.0 and slept["cpu_ms"] < 10.0
    if sys.platform == "linux":
        assert all(s["cpu_wait_ms"] >= 0.0 for s in steps)
        assert slept["cpu_wait_ms"] < 25.0  # (its wall time was the sleep's, not the queue's)


def test_the_run_queue_wait_is_read_from_schedstat(tmp_path):
    fake = tmp_path / "schedstat"
    fake.write_text("5000000 2000000 7\n")
    clock = ThreadTimes(str(fake))
    assert clock.knows_wait and clock.read()[1] == 2_000_000
    fake.write_text("5000000 3500000 9\n")  # (the file is read afresh, at offset 0)
    assert clock.read()[1] == 3_500_000
    clock.close()
    assert clock.read()[1] is None  # closed: the CPU time alone


@pytest.mark.parametrize("content", ["", "garbage\n", "12\n"])
def test_a_schedstat_without_the_figures_leaves_the_wait_unknown(tmp_path, content):
    fake = tmp_path / "schedstat"
    fake.write_text(content)
    clock = ThreadTimes(str(fake))
    assert not clock.knows_wait
    assert "cpu_wait_ms" not in clock.since(clock.read())
    assert not ThreadTimes(str(tmp_path / "missing")).knows_wait


def test_another_thread_reads_nothing():
    """A step cut in another thread than the profiler's: its figures would be another
    thread's, so the step carries none."""
    clock = ThreadTimes()
    out = []
    worker = threading.Thread(target=lambda: out.append(clock.read()))
    worker.start()
    worker.join()
    assert out == [None] and host_figures(clock.read(), None) == {}
    clock.close()


#: a buffer over glibc's largest dynamic mmap threshold (32 MiB): each one a fresh mmap
BIG = 64 * 2**20


def _faulting_steps(fresh: bool) -> list[dict]:
    torch.set_num_threads(1)
    kept = torch.empty(BIG // 4).fill_(0.0)  # (its pages touched before the steps)
    with torchdoctor.Profiler(None, syncs=False, window=1, period_steps=100) as prof:
        for _ in range(6):
            buffer = torch.empty(BIG // 4) if fresh else kept
            buffer.fill_(1.0)  # first touch of a fresh mmap: the kernel zero-fills each page
            del buffer
            prof.step()
    return prof.session["steps"]


@pytest.mark.skipif(sys.platform != "linux" or "MALLOC_MMAP_MAX_" in os.environ
                    or "malloc" in os.environ.get("LD_PRELOAD", ""),
                    reason="glibc's default allocator (a fresh mmap per large buffer)")  # fmt: skip
def test_a_freshly_mapped_buffer_per_step_records_its_page_faults_and_kernel_time():
    fresh, reused = _faulting_steps(fresh=True), _faulting_steps(fresh=False)
    pages = BIG // 4096
    assert all(s["minor_faults"] >= 0.9 * pages for s in fresh), fresh
    assert all(isinstance(s["minor_faults"], int) for s in fresh)
    assert sum(s["sys_ms"] for s in fresh) > 0.0 and all(s["user_ms"] >= 0.0 for s in fresh)
    assert all(s["minor_faults"] < 0.1 * pages for s in reused), reused
    assert sum(s["sys_ms"] for s in reused) < sum(s["sys_ms"] for s in fresh)


def test_without_resource_the_kernel_figures_are_absent(monkeypatch):
    """On Windows (no ``resource`` module) a step carries no sys_ms / minor_faults, and no
    error."""
    from torchdoctor.collect import host_time

    monkeypatch.setattr(host_time, "_getrusage", None)
    clock = ThreadTimes()
    figures = clock.since(clock.read())
    assert "cpu_ms" in figures and not {"sys_ms", "user_ms", "minor_faults"} & set(figures)
    clock.close()

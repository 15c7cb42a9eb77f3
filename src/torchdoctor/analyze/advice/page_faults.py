"""Rule ``kernel-page-faults``: a CPU step spends a large share of its time in the kernel,
zero-filling the freshly mapped pages of large tensors.

glibc's malloc serves an allocation over its mmap threshold (128 KiB at first, raised up to
32 MiB as such blocks are freed) with a fresh anonymous mapping, and unmaps it at free. Every
first touch of a page of a fresh mapping is a minor page fault in which the kernel zero-fills
4 KiB. A CPU step whose tensors are larger than 32 MiB pays that again at every step: the
process's kernel (system) time grows with its minor faults. A caching allocator (jemalloc,
tcmalloc) or glibc with its mmap and trimming off keeps the memory mapped and reuses it.

The figures are the process's, read at each step boundary (``steps[i].sys_ms``, ``user_ms``,
``minor_faults``: ``collect/host_time.py``), summed up by ``analyze/kernel_time.py``: the
kernel's share of a step is its time over the step's wall time, at most its share of the
process's CPU time (with several threads their CPU times add up past the wall time).

Measured on karpathy/build-nanogpt on a CPU (512 x 50304 float32 logits, 100 MB each, one
thread): 420 ms of kernel time in a 770 ms step, 267k minor faults (1.0 GiB zero-filled) per
step; with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000`` the step went 797 -> 415
ms and the kernel time to nothing.

Example:
    >>> steps = [{"index": i, "wall_ms": 800.0, "sys_ms": 420.0, "user_ms": 370.0,
    ...           "minor_faults": 267_000} for i in range(8)]
    >>> (advice,) = kernel_page_faults({"steps": steps, "step_ms": {"median": 800.0},
    ...                                  "environment": {"device": "cpu"}})
    >>> advice.title
    '52% of the step is kernel time zero-filling freshly mapped memory (267,000 page faults per step): use a caching allocator'
    >>> [round(x) for x in advice.saving_range_ms]
    [210, 418]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    SPEEDUPS,
    Advice,
    fmt_count,
    fmt_ms,
    is_cuda,
    with_saving,
)
from torchdoctor.analyze.kernel_time import MALLOC_CACHE_ENV, kernel_time

#: the typical step's kernel share past which the rule speaks (build-nanogpt: 52%; llm.c's
#: train_gpt2.py at 124M, whose step gained 22% from the remedy: see docs/advice-rules.md;
#: mamba.py's selective scan at 12% of the step, 64k faults, gained 10%; ordinary CPU steps:
#: a few percent)
KERNEL_SHARE = 0.10
#: minor faults per step (median) that make the kernel time the pages' (4 MiB zero-filled)
MIN_FAULTS = 1_000
#: ... and at least this many per ms of kernel time: a first-touch fault costs 1.4-1.6 us here
#: (build-nanogpt 1.57 us, a 64 MiB buffer filled afresh 1.46 us), so 150 explain at least a
#: fifth of it; kernel time with few faults (system calls, I/O) is some other cause
MIN_FAULTS_PER_KERNEL_MS = 150.0
#: what the fix's command lines turn on (glibc reads them when the process starts)
GLIBC_ENV = " ".join(f"{name}={value}" for name, value in MALLOC_CACHE_ENV)
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def kernel_page_faults(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when a CPU step's kernel time is >= :data:`KERNEL_SHARE` of it (median) and
    its minor faults are many (>= :data:`MIN_FAULTS` per step, >= :data:`MIN_FAULTS_PER_KERNEL_MS`
    per ms of kernel time). Its saving: Amdahl over the steps' kernel share of their mean
    step with ``SPEEDUPS["caching_allocator"]``, at most all of the kernel time (a measured
    time: no share of it is the profiler's, and a busy machine does not inflate it).

    Example:
        >>> few = [{"wall_ms": 800.0, "sys_ms": 420.0, "user_ms": 370.0, "minor_faults": 90}] * 8
        >>> kernel_page_faults({"steps": few, "environment": {"device": "cpu"}})
        []
    """
    if is_cuda(session):  # (the device's work sets a CUDA step's pace, not its host's faults)
        return []
    found = kernel_time(session)
    if (found is None or found.share < KERNEL_SHARE or found.faults < MIN_FAULTS
            or found.faults < MIN_FAULTS_PER_KERNEL_MS * found.kernel_ms):  # fmt: skip
        return []
    typical, kernel_ms, faults = found.share, found.kernel_ms, found.faults
    item = Advice(
        rule="kernel-page-faults",
        title=f"{100 * typical:.0f}% of the step is kernel time zero-filling freshly mapped "
        f"memory ({fmt_count(faults)} page faults per step): use a caching allocator",
        confidence="medium",
        evidence=[
            f"the process's kernel (system) CPU time is {fmt_ms(kernel_ms)} per step, "
            f"{100 * typical:.0f}% of the step (median of {found.steps:,} steps, all threads: "
            "getrusage)",
            f"{fmt_count(faults)} minor page faults per step: about {fmt_count(found.zeroed_mb)} MB "
            f"zero-filled by the kernel per step (4 KiB a page), "
            f"{1e3 * kernel_ms / faults:.3g} us of kernel time per fault",
            "large tensors (over glibc's mmap threshold, 32 MiB at most) get fresh memory "
            "mappings from malloc and are unmapped when freed: the kernel zero-fills their "
            "pages again at every step",
        ],
        fix="Keep the memory mapped between steps: start the script with a caching allocator "
        f"preloaded (jemalloc or tcmalloc, as Intel's PyTorch CPU performance guide "
        f"recommends: LD_PRELOAD={JEMALLOC}, Debian's libjemalloc2; or libtcmalloc.so), or "
        f"turn glibc's mmap and trimming off with {GLIBC_ENV}. Set them in the shell or the "
        "launcher: glibc and the dynamic loader read them when the process starts, so "
        "os.environ inside the script does nothing. The cost: the process keeps its peak "
        "memory allocated (freed memory stays in the allocator for the next step instead of "
        "going back to the system). `torchdoctor tune --knobs malloc_cache` measures the "
        "glibc setting on your script. The saving is at most the kernel time, "
        f"{fmt_ms(found.fraction * found.mean_step)} per step on average.",
        references=[
            "Intel Extension for PyTorch performance tuning guide: jemalloc / tcmalloc",
            "mallopt(3): M_MMAP_MAX, M_TRIM_THRESHOLD (MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_)",
        ],
        code=_code(session),
        cause="caching-allocator",
    )
    speedup = SPEEDUPS["caching_allocator"]
    item.evidence.append(f"expected: the kernel time {speedup.low:g}-{speedup.high:g}x shorter "
                         f"({speedup.source})")  # fmt: skip
    return [with_saving(item, found.mean_step, found.fraction, speedup)]


def _code(session: Mapping[str, Any]) -> str:
    """The command lines of the fix, with the session's script.

    Example:
        >>> print(_code({"label": "train_gpt2.py"}))
        MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python train_gpt2.py
        # or a caching allocator (apt install libjemalloc2):
        LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python train_gpt2.py
    """
    label = str(session.get("label") or "")
    script = label if label.endswith(".py") else "train.py"
    return (f"{GLIBC_ENV} python {script}\n"
            "# or a caching allocator (apt install libjemalloc2):\n"
            f"LD_PRELOAD={JEMALLOC} python {script}")  # fmt: skip

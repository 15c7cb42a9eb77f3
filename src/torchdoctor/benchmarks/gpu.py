"""The GPU suite (``torchdoctor bench gpu``, run by ``make gpu-check``): CUDA figures only.

- ``linear_assignment`` batched on the device vs the seed's per-problem loop (copy to the host,
  scipy, copy back) at B = 1024, K = 8: target >= 3x.
- ``select_tokens_per_segment`` (torch backend, the accelerator path) vs the seed's loop of a
  ``torch.where`` and an ``.item()`` per token, 8 and 32 frames.
- each workload, slow vs fast variant on the device at the "cpu" scale, equivalence checked.
- the profiler's cost on a small step on the device: the same step plain, under
  ``torchdoctor.Profiler`` and under ``torch.profiler``, interleaved.

Without CUDA ``run`` returns one table saying so (the suite never fails on a CPU machine).

Example:
    >>> import torch
    >>> tables = run(quick=True) if not torch.cuda.is_available() else []
    >>> tables[0].title if tables else "needs no GPU to import"
    'GPU suite: no CUDA device'
"""

from __future__ import annotations

import torch

from torchdoctor.benchmarks import ops_assignment
from torchdoctor.benchmarks.ops_tokens import KEEP, _inputs
from torchdoctor.measure import BenchTable, compare
from torchdoctor.ops.reference.tokens import select_tokens_reference
from torchdoctor.ops.tokens import select_tokens_per_segment


def _tokens_table(quick: bool) -> BenchTable:
    table = BenchTable(
        "select_tokens_per_segment on CUDA (torch backend) vs the seed's per-frame loop",
        ["frames", "tokens", "seed loop ms", "batched ms", "speedup", "IQR", "identical"],
    )
    generator = torch.Generator().manual_seed(0)
    for frames in (8,) if quick else (8, 32):
        features, ids, quality = (t.cuda() for t in _inputs(frames, 1024, generator))

        def seed(f, i, q):
            return select_tokens_reference(f, i, keep_ratio=KEEP, quality=q)

        def batched(f, i, q):
            return select_tokens_per_segment(f, i, keep_ratio=KEEP, quality=q, backend="torch")

        result = compare(seed, batched, features, ids, quality, warmup=1,
                         repeats=3 if quick else 10, names=("seed loop", "batched"))  # fmt: skip
        table.add_row(
            frames, len(ids), result.baseline_ms, result.candidate_ms,
            f"{result.speedup:.2f}x" if result.speedup else result.verdict,
            f"{result.speedup_q1:.2f}-{result.speedup_q3:.2f}" if result.speedup else "-",
            bool(result.equivalent),
        )  # fmt: skip
    table.notes.append("identical: the same kept positions as the seed loop (compare's check).")
    return table


def _workloads_table(quick: bool) -> BenchTable:
    from torchdoctor.workloads import WORKLOADS, build

    table = BenchTable(
        "workloads on CUDA: slow vs fast variant",
        ["workload", "slow ms", "fast ms", "speedup", "equivalent"],
    )
    for name in sorted(WORKLOADS):
        workload = build(name, scale="tiny" if quick else "cpu", device="cuda")
        report = workload.check_equivalence()
        result = compare(workload.slow_step, workload.fast_step, warmup=1,
                         repeats=2 if quick else 5, check=False)  # fmt: skip
        table.add_row(
            name, result.baseline_ms, result.candidate_ms, f"{result.speedup:.2f}x",
            "yes" if report.equivalent else "NO",
        )  # fmt: skip
    return table


def _profiler_table(quick: bool) -> BenchTable:
    import torchdoctor

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False).cuda()
    x = torch.randn(8, 128, 256, device="cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    steps = 10 if quick else 30

    def plain():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            model(x).pow(2).mean().backward()
            opt.step()

    def profiled():
        with torchdoctor.Profiler(model, syncs=False) as prof:
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                model(x).pow(2).mean().backward()
                opt.step()
                prof.step()

    def kineto():
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities):
            plain()

    table = BenchTable(
        f"profiler cost on CUDA (4-layer transformer encoder, {steps} steps per call)",
        ["collector", "plain ms", "profiled ms", "ratio", "IQR"],
    )
    for name, fn in (("torchdoctor.Profiler", profiled), ("torch.profiler", kineto)):
        result = compare(plain, fn, warmup=1, repeats=3 if quick else 7, check=False)
        ratio = 1 / result.speedup if result.speedup else float("nan")
        table.add_row(name, result.baseline_ms, result.candidate_ms, f"{ratio:.3f}x",
                      f"{1 / result.speedup_q3:.3f}-{1 / result.speedup_q1:.3f}")  # fmt: skip
    table.notes.append("ratio = profiled time / plain time (median of interleaved pairs).")
    return table


def run(quick: bool = False) -> list[BenchTable]:
    """The GPU tables; one explanatory table when no CUDA device is present.

    Example:
        >>> from torchdoctor.measure.suites import load_suite
        >>> dict(load_suite("gpu"))["gpu"] is run  # `torchdoctor bench gpu` (make gpu-check) runs it
        True
    """
    if not torch.cuda.is_available():
        table = BenchTable("GPU suite: no CUDA device", ["torch", "cuda build"])
        table.add_row(torch.__version__, str(torch.version.cuda))
        table.notes.append("run `make gpu-check` on a machine with an NVIDIA GPU")
        return [table]
    name = torch.cuda.get_device_name(0)
    assignment = ops_assignment._table("cuda", (1024,), (8,), 3 if quick else 10)
    assignment.notes.append(
        "baseline: each problem copied to the host, scipy, copied back (seed 000); target >= 3x"
    )
    tables = [assignment, _tokens_table(quick), _profiler_table(quick), _workloads_table(quick)]
    for table in tables:
        table.title += f" [{name}]"
    return tables

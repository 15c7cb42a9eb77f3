"""Registry of benchmark suites run by ``torchdoctor bench [SUITE...]``.

A suite is a list of modules under ``torchdoctor.benchmarks``. Each module defines

    def run(quick: bool = False) -> list[BenchTable]

``quick`` asks for small sizes (used by tests and ``make demo``); the full sizes are the ones
reported in BENCHMARKS.md. Modules are imported only when their suite runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torchdoctor.measure.table import BenchTable

#: suite name -> benchmark modules, in the order they run.
SUITES: dict[str, list[str]] = {
    "syncs": ["torchdoctor.benchmarks.sync_overhead"],
    "profiler": ["torchdoctor.benchmarks.profiler_overhead", "torchdoctor.benchmarks.profiler_gc"],
    "hotlines": ["torchdoctor.benchmarks.hot_lines_overhead"],
    "overhead": ["torchdoctor.benchmarks.profiler_gpt", "torchdoctor.benchmarks.run_overhead"],
    "harness": ["torchdoctor.benchmarks.harness"],
    "fused": [
        "torchdoctor.benchmarks.fused_kernels",
        "torchdoctor.benchmarks.foreach_updates",
        "torchdoctor.benchmarks.sparse_layouts",
        "torchdoctor.benchmarks.conv_layouts",
        "torchdoctor.benchmarks.bf16_convs",
        "torchdoctor.benchmarks.distribution_validation",
        "torchdoctor.benchmarks.attention_dropout",
        "torchdoctor.benchmarks.attention_layouts",
        "torchdoctor.benchmarks.jacobian_rows",
        "torchdoctor.benchmarks.padding_waste",
    ],
    "train": ["torchdoctor.benchmarks.train_metrics"],
    "ops": [
        "torchdoctor.benchmarks.ops_mahalanobis",
        "torchdoctor.benchmarks.ops_mining",
        "torchdoctor.benchmarks.ops_spd",
        "torchdoctor.benchmarks.ops_assignment",
        "torchdoctor.benchmarks.ops_sinkhorn",
        "torchdoctor.benchmarks.ops_tokens",
        "torchdoctor.benchmarks.ops_graphs",
    ],
    "workloads": ["torchdoctor.benchmarks.workloads"],
    "lint": ["torchdoctor.benchmarks.lint_torch"],
    # CUDA only (make gpu-check); a CPU machine gets one table saying there is no GPU
    "gpu": ["torchdoctor.benchmarks.gpu", "torchdoctor.benchmarks.gpu_overhead"],
}


def suite_names() -> list[str]:
    """The registered suite names, in :data:`SUITES` order.

    Example:
        >>> suite_names()[:2], "gpu" in suite_names()
        (['syncs', 'profiler'], True)
    """
    return list(SUITES)


def load_suite(name: str) -> list[tuple[str, Callable[..., list[BenchTable]]]]:
    """Return ``(module_name, run)`` pairs of a suite; a clear error for unknown names.

    Example:
        >>> [name for name, run in load_suite("train")]
        ['train_metrics']
    """
    if name not in SUITES:
        known = ", ".join(SUITES)
        raise ValueError(f"unknown benchmark suite {name!r}; known suites: {known}")
    out = []
    for module_name in SUITES[name]:
        module = importlib.import_module(module_name)
        out.append((module_name.rsplit(".", 1)[-1], module.run))
    return out

"""The linter on real code: a slice of the installed torch package must lint without crashes.

The whole package (about 2,300 files, about 45 s of CPU) runs only with
TORCHDOCTOR_LINT_WHOLE_TORCH=1; its numbers are in BENCHMARKS.md (`torchdoctor bench lint`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from torchdoctor.lint import lint_paths

TORCH = Path(torch.__file__).parent
SUBSET = [
    "optim/sgd.py",
    "optim/adam.py",
    "optim/lr_scheduler.py",
    "nn/modules/linear.py",
    "nn/modules/batchnorm.py",
    "nn/modules/activation.py",
    "utils/data/dataloader.py",
]


def _internal_errors(findings):
    return [f for f in findings if f.code == "TD000" and "internal error" in f.message]


def test_torch_subset_lints_without_crashes() -> None:
    paths = [TORCH / p for p in SUBSET if (TORCH / p).exists()]
    assert len(paths) >= 5
    findings = lint_paths(paths)
    assert _internal_errors(findings) == []
    assert not [f for f in findings if f.code == "TD000"]  # torch's own code parses


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("TORCHDOCTOR_LINT_WHOLE_TORCH") != "1",
    reason="whole-torch lint takes minutes; set TORCHDOCTOR_LINT_WHOLE_TORCH=1",
)
def test_whole_torch_lints_without_crashes() -> None:
    findings = lint_paths([TORCH], jobs=max(1, (os.cpu_count() or 2)))
    assert _internal_errors(findings) == []

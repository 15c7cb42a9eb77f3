"""Docstring examples stay runnable, and the ops benchmarks run at their quick sizes."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "torchdoctor.ops._validation",
    "torchdoctor.ops.segments",
    "torchdoctor.ops.labels",
    "torchdoctor.ops.mahalanobis",
    "torchdoctor.ops.mining",
    "torchdoctor.ops.covariance",
    "torchdoctor.ops.spd",
    "torchdoctor.ops.reference.labels",
    "torchdoctor.ops.reference.segments",
    "torchdoctor.ops.reference.mahalanobis",
    "torchdoctor.ops.reference.mining",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "name",
    ["ops_mahalanobis", "ops_mining", "ops_spd", "ops_assignment", "ops_sinkhorn", "ops_tokens"],
)
def test_benchmarks_run_quick(name):
    module = importlib.import_module(f"torchdoctor.benchmarks.{name}")
    tables = module.run(quick=True)
    assert tables and all(table.rows for table in tables)
    for table in tables:
        assert all(len(row) == len(table.columns) for row in table.rows)

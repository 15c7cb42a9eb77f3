"""Collection rules for the whole tree (tests and the package's docstring examples)."""

import importlib.util
import os

import pytest

# Calibrations are measured in each test process, never read from (or written to) the user's
# calibration cache (collect/calibration_cache.py): a test sees what a first run on a fresh
# machine does (subprocesses inherit it); the cache's own tests point it at temporary files.
os.environ.setdefault("TORCHDOCTOR_CALIBRATION", "off")

# The compiled DPP engine imports numba, an optional dependency; without it the module is
# never imported by torchdoctor (the NumPy engine runs), so its examples are skipped too.
collect_ignore = [] if importlib.util.find_spec("numba") else ["src/torchdoctor/ops/_greedy_jit.py"]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where a CUDA device is there (``make gpu-check``).

    ``TORCHDOCTOR_CUDA_TESTS_ON=cpu`` runs the device-agnostic ones on the CPU instead, to check
    the tests themselves on a machine without a GPU (tests/cuda/conftest.py reads it).
    """
    import torch

    if torch.cuda.is_available() or os.environ.get("TORCHDOCTOR_CUDA_TESTS_ON") == "cpu":
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `make gpu-check` on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _private_run_history(tmp_path_factory, monkeypatch):
    """No test (docstring examples included) writes the user's run history: each test gets
    its own ``TORCHDOCTOR_HISTORY`` file; tests that read it use ``os.environ``'s value."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    monkeypatch.setenv("TORCHDOCTOR_HISTORY", str(path))
    yield path

"""Collection rules for the whole tree (tests and the package's docstring examples)."""

import importlib.util

import pytest

# The compiled DPP engine imports numba, an optional dependency; without it the module is
# never imported by torchdoctor (the NumPy engine runs), so its examples are skipped too.
collect_ignore = [] if importlib.util.find_spec("numba") else ["src/torchdoctor/ops/_greedy_jit.py"]


@pytest.fixture(autouse=True)
def _private_run_history(tmp_path_factory, monkeypatch):
    """No test (docstring examples included) writes the user's run history: each test gets
    its own ``TORCHDOCTOR_HISTORY`` file; tests that read it use ``os.environ``'s value."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    monkeypatch.setenv("TORCHDOCTOR_HISTORY", str(path))
    yield path

"""The hot-line tests run torch on one intra-op thread, as the profiler's do (see
tests/profiler/conftest.py): their advice compares measured times."""

from tests.profiler.conftest import _one_intra_op_thread  # noqa: F401  (an autouse fixture)

"""Fixtures shared by the report tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run torch on one thread: timings less sensitive to other processes on a small shared
    machine (two threads spin against them, and a 0.1 ms op takes 30 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

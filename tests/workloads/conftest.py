"""Shared set-up for the workload tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny sizes: one intra-op thread avoids oversubscribing a shared CPU; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

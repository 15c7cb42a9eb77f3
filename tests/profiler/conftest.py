"""The profiler's tests run torch on one intra-op thread.

Their assertions read measured times (a periodic evaluation 3x the median step, a per-token
slope, a detail window against its light control steps). On a 2-core CI host with anything
else running, a second intra-op thread off its core leaves the main one spinning at the
barrier, on a core, for whole scheduler slices: the step times then follow the neighbours (a
decode slope's correlation fell from 0.93 to 0.2 beside one busy loop), and the rules rightly
find nothing. One thread keeps each step's time its own work.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

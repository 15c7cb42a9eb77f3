"""The train_metrics benchmark's claim, on a short loop: eager >= 3 syncs/step, lazy 0."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.benchmarks.train_metrics import (
    _inputs,
    _syncs_per_step,
    eager_loop,
    lazy_loop,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops; threads only add contention on a shared machine
    yield
    torch.set_num_threads(threads)


def test_eager_syncs_every_step_and_lazy_only_at_log_points():
    data, noise = _inputs(7, "cpu")
    eager = _syncs_per_step(eager_loop, data, noise)
    lazy = _syncs_per_step(lazy_loop, data, noise)
    assert len(eager) == len(lazy) == 7
    assert min(eager) >= 3
    # the lazy loop converts at its first step (nothing shown yet), then every 50 steps
    assert lazy == [1, 0, 0, 0, 0, 0, 0]


def test_both_loops_report_the_same_metrics():
    data, noise = _inputs(5, "cpu")
    eager, lazy = eager_loop(data, noise), lazy_loop(data, noise)
    assert eager.keys() == lazy.keys() == {"loss", "nll", "kl"}
    for name in eager:
        assert abs(eager[name] - lazy[name]) <= 1e-9 * max(1.0, abs(eager[name]))

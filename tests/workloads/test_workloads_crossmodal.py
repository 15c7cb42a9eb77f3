import numpy as np
import torch

from torchdoctor.workloads import build
from torchdoctor.workloads.crossmodal_reid import sdm_pairs


def test_sdm_pairs_pair_each_non_rgb_row_with_an_rgb_row_of_its_identity():
    labels = np.array([5, 5, 5, 7, 7, 9, 9])
    is_rgb = np.array([True, False, False, False, False, True, False])
    queries, gallery, missing = sdm_pairs(labels, is_rgb)
    assert queries == [1, 2, 6] and gallery == [0, 0, 5]
    assert missing == 2  # identity 7 has no RGB row in the batch


def test_crossmodal_steps_run_and_fast_reads_metrics_lazily():
    w = build("crossmodal_reid", scale="tiny", log_every=5)
    for _ in range(6):
        assert torch.isfinite(w.slow_step())
        assert torch.isfinite(w.fast_step())
    assert len(w.slow["history"]) == 6  # eager: one dict of floats per step
    assert len(w.fast["history"]) == 1  # lazy: one read per log_every steps
    assert any("without a positive" in line for line in w.slow["log"])


def test_crossmodal_equivalence_coverage_and_alarms():
    w = build("crossmodal_reid", scale="tiny")
    report = w.check_equivalence()
    assert report.equivalent, report.summary()
    by_name = {c.name: c for c in report.checks}
    fast_cov = next(c for n, c in by_name.items() if n.startswith("pair coverage, fast"))
    slow_cov = next(c for n, c in by_name.items() if n.startswith("pair coverage, slow"))
    assert fast_cov.value >= 0.85 > slow_cov.value
    bad = next(c for n, c in by_name.items() if n.startswith("alarms fire"))
    assert bad.passed and bad.value > 0

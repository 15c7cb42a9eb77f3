"""A lint finding on a line that syncs every step stays hot when one stalled step of a short
run makes the mean step long: the sync is weighed against the typical (median) step (a CI
host once made `test_hot_lint_finding_outranks_the_cold_one`'s sync 'negligible')."""

from torchdoctor.analyze.advice.lint_hot import lint_findings


def _session(mean_ms):
    return {
        "config": {"steps": 3},
        "step_ms": {"median": 0.5, "mean": mean_ms},
        "tree": {"total_ms": {"median": 0.5, "mean": mean_ms}, "children": []},
        "syncs": [{"file": "/w/train.py", "line": 11, "per_step": 1.0, "kind": "item"}],
    }


def test_a_sync_every_step_is_hot_however_long_one_stalled_step_was():
    finding = {"code": "TD201", "severity": "warning", "message": "loss.item() every step",
               "path": "/w/train.py", "line": 11, "replacement": None}  # fmt: skip
    for mean in (0.6, 150.0):  # (one step of three stalled 450 ms)
        (item,) = lint_findings(_session(mean), [finding])
        assert item.heat > 0, (mean, item.title)

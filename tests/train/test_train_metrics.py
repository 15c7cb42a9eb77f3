"""LazyMetrics: equal to eager .item() accumulation, and no host sync in update()."""

from __future__ import annotations

import math

import pytest
import torch

from torchdoctor.testing import count_host_syncs
from torchdoctor.train import LazyMetrics
from torchdoctor.train.reference import EagerMetrics


def _losses(steps: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "loss": torch.rand((), generator=g) * 3,
            "nll": torch.randn((), generator=g),
            "kl": torch.rand((), generator=g, dtype=torch.float64),
        }
        for _ in range(steps)
    ]


def test_lazy_metrics_equal_eager_item_accumulation():
    lazy, eager = LazyMetrics(), EagerMetrics()
    g = torch.Generator().manual_seed(1)
    for values in _losses(200):
        weight = int(torch.randint(1, 9, (), generator=g))
        lazy.update(weight=weight, **values)
        eager.update(weight=weight, **values)
    got, want = lazy.compute(), eager.compute()
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-12)


def test_update_does_no_host_sync_and_compute_syncs_once():
    metrics = LazyMetrics(reduce={"correct": "sum", "peak": "max"}, num_classes=5)
    labels = torch.tensor([0, 1, 4, 4])
    with count_host_syncs() as syncs:
        for values in _losses(20):
            metrics.update(**values, correct=(labels > 1).sum(), peak=values["loss"])
            metrics.update(weight=torch.tensor(3.0), loss=values["loss"])
            metrics.update_classes(labels, correct=labels > 1)
    assert syncs.count == 0
    assert metrics.syncs == 0
    metrics.compute()
    assert metrics.syncs == 1


def test_update_never_calls_item_tolist_or_cpu(monkeypatch):
    metrics = LazyMetrics(num_classes=3)
    calls = []
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    for values in _losses(5):
        metrics.update(**values, weight=torch.tensor(2.0))
        metrics.update_classes(torch.tensor([0, 2]), correct=torch.tensor([True, False]))
    assert calls == []


def test_reductions_sum_max_min_last_and_host_numbers():
    metrics = LazyMetrics(reduce={"n": "sum", "hi": "max", "lo": "min", "now": "last"})
    for step, value in enumerate([3.0, -1.0, 7.0, 2.0]):
        tensor = torch.tensor(value)
        metrics.update(n=tensor, hi=tensor, lo=tensor, now=tensor, lr=0.1 * step)
    got = metrics.compute()
    assert got["n"] == 11.0 and got["hi"] == 7.0 and got["lo"] == -1.0 and got["now"] == 2.0
    assert got["lr"] == pytest.approx(0.15)


def test_per_class_counts_match_a_python_count():
    g = torch.Generator().manual_seed(3)
    metrics = LazyMetrics(num_classes=7)
    expected_total, expected_correct = [0] * 7, [0] * 7
    for _ in range(10):
        labels = torch.randint(0, 7, (16,), generator=g)
        correct = torch.rand(16, generator=g) > 0.5
        metrics.update_classes(labels, correct=correct)
        for label, ok in zip(labels.tolist(), correct.tolist()):
            expected_total[label] += 1
            expected_correct[label] += int(ok)
    counts = metrics.class_counts()
    assert counts["total"] == expected_total
    assert counts["correct"] == expected_correct
    for acc, c, t in zip(counts["accuracy"], expected_correct, expected_total):
        assert (math.isnan(acc) and t == 0) or acc == pytest.approx(c / t)


def test_postfix_syncs_only_every_sync_every_updates():
    metrics = LazyMetrics(sync_every=10)
    shown = []
    for step in range(30):
        metrics.update(loss=torch.tensor(float(step)))
        shown.append(metrics.postfix()["loss"])
    # first call syncs (nothing to show yet), then every 10 updates
    assert metrics.syncs == 3
    assert shown[0] == "0" and shown[5] == "0" and shown[10] == "5"
    assert metrics.format().startswith("loss=")


def test_reset_forgets_values_and_bad_inputs_are_explained():
    metrics = LazyMetrics()
    metrics.update(loss=torch.tensor(5.0))
    metrics.reset()
    metrics.update(loss=torch.tensor(1.0))
    assert metrics.compute() == {"loss": 1.0}
    with pytest.raises(ValueError, match="0-d tensor"):
        metrics.update(loss=torch.ones(3))
    with pytest.raises(TypeError, match="Python number"):
        metrics.update(loss="high")
    with pytest.raises(ValueError, match="unknown reduction"):
        LazyMetrics(reduce={"loss": "median"})
    with pytest.raises(ValueError, match="num_classes"):
        metrics.update_classes(torch.tensor([0]))


def test_int_and_bool_tensors_and_mixed_host_values_share_one_mean():
    metrics = LazyMetrics()
    metrics.update(acc=torch.tensor(True))
    metrics.update(acc=torch.tensor(0))
    metrics.update(acc=1.0, weight=2)
    assert metrics.compute()["acc"] == pytest.approx(3 / 4)


def test_max_and_min_keep_a_nan_for_numbers_as_for_tensors():
    for values in ([1.0, math.nan, 2.0], [math.nan, 1.0], [1.0, math.nan]):
        for how in ("max", "min"):
            numbers, tensors = LazyMetrics(reduce={"x": how}), LazyMetrics(reduce={"x": how})
            for v in values:
                numbers.update(x=v)
                tensors.update(x=torch.tensor(v))
            assert math.isnan(numbers.compute()["x"]), (values, how)
            assert math.isnan(tensors.compute()["x"]), (values, how)


def test_weight_may_be_a_one_element_tensor_but_not_a_vector():
    metrics = LazyMetrics()
    metrics.update(loss=torch.tensor(1.0), weight=torch.tensor([3.0]))
    metrics.update(loss=torch.tensor(3.0), weight=torch.tensor(1.0))
    assert metrics.compute()["loss"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="weight must be one number"):
        metrics.update(loss=torch.tensor(1.0), weight=torch.tensor([1.0, 2.0]))

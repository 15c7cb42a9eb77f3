"""compare(): equivalence verdicts with named paths, side ordering, errors, gradients."""

from __future__ import annotations

import pytest
import torch

from torchdoctor.measure import compare, compare_outputs


class FakeClock:
    """A clock that only moves when the code under test says so: timing without flakiness."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def costing(self, fn, nanoseconds: int):
        def wrapped(*args, **kwargs):
            self.now += nanoseconds
            return fn(*args, **kwargs)

        return wrapped


def test_flags_a_candidate_wrong_in_a_single_element():
    x = torch.randn(8, 8)

    def wrong(a):
        out = a * 2
        out[3, 5] += 1e-3
        return out

    result = compare(lambda a: a * 2, wrong, x, repeats=2)
    assert result.equivalent is False
    assert len(result.mismatches) == 1
    assert "1 of 64 elements differ" in result.mismatches[0]
    assert "(3, 5)" in result.mismatches[0]


def test_equal_outputs_are_equivalent_and_errors_are_reported():
    x = torch.randn(5, 3)
    result = compare(lambda a: a.sum(0), lambda a: a.sum(0), x, repeats=2)
    assert result.equivalent is True
    assert result.max_abs_error == 0.0


def test_orders_a_clearly_slower_candidate_with_a_fake_clock():
    clock = FakeClock()
    fast = clock.costing(lambda a: a + 1, 1_000_000)  # 1 ms
    slow = clock.costing(lambda a: a + 1, 5_000_000)  # 5 ms
    result = compare(fast, slow, torch.ones(3), repeats=6, clock=clock)
    assert result.baseline_ms == pytest.approx(1.0)
    assert result.candidate_ms == pytest.approx(5.0)
    assert result.speedup == pytest.approx(0.2)
    assert result.speedup_min <= result.speedup_q1 <= result.speedup <= result.speedup_q3
    assert result.speedup_q3 <= result.speedup_max


def test_runs_interleaved():
    order = []
    compare(lambda: order.append("A"), lambda: order.append("B"), warmup=0, repeats=4, check=False)
    timed = order[2:]  # the first two are the output-producing calls
    assert timed == ["A", "B", "B", "A", "A", "B", "B", "A"]


def test_structure_differences_are_named_by_path_not_raised():
    x = torch.randn(4, 4)
    result = compare(lambda a: (a, {"dist": a[:, :3]}), lambda a: (a, {"dist": a}), x, repeats=1)
    assert result.equivalent is False
    assert result.mismatches == ["out[1]['dist']: shape (4, 3) vs (4, 4)"]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (torch.tensor([1, 2]), torch.tensor([1.0, 2.0]), "out: dtype torch.int64 vs torch.float32"),
        ([1, 2], (1, 2), "out: type list vs tuple"),
        ({"a": 1}, {"b": 1}, "keys differ"),
        ([torch.ones(2)], [torch.ones(2), 1], "out: length 1 vs 2"),
        (1.0, 1.5, "out: 1.0 vs 1.5"),
        (torch.tensor([True, False]), torch.tensor([True, True]), "exact comparison"),
    ],
)
def test_mismatch_messages(a, b, expected):
    verdict = compare_outputs(a, b)
    assert not verdict.equivalent
    assert expected in verdict.mismatches[0]


def test_integer_tensors_compare_exactly_even_with_loose_tolerance():
    verdict = compare_outputs(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4]), rtol=1.0, atol=10)
    assert not verdict.equivalent


def test_tolerances_apply_to_floats():
    a = torch.tensor([1.0, 2.0])
    assert compare_outputs(a, a + 1e-7, rtol=1e-5).equivalent
    assert not compare_outputs(a, a + 1e-3, rtol=1e-5).equivalent


def test_nan_in_same_place_is_equal():
    a = torch.tensor([float("nan"), 1.0])
    assert compare_outputs(a, a.clone()).equivalent
    assert not compare_outputs(a, torch.tensor([1.0, 1.0])).equivalent


def test_a_raising_side_is_reported_with_its_name():
    result = compare(lambda a: a, lambda a: a.reshape(7), torch.ones(3), names=("ok", "broken"))
    assert result.equivalent is False
    assert result.error.startswith("broken raised RuntimeError")
    assert "error" in result.verdict


def test_gradients_are_compared():
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    same = compare(lambda a: (a * a).sum(), lambda a: (a**2).sum(), x, grads=True, repeats=2)
    assert same.equivalent is True
    # Same forward value, different gradient: caught only through the gradients.
    different = compare(
        lambda a: (a * a).sum(), lambda a: (a * a.detach()).sum(), x, grads=True, repeats=2
    )
    assert different.equivalent is False
    assert any("[1]" in m for m in different.mismatches)


def test_bad_arguments():
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        compare(abs, abs, 1, repeats=0)


def test_grads_without_an_input_that_requires_grad_is_refused():
    """conv_layouts passed no input and timed forwards alone while its table said forward +
    backward: a backward runs only through the arguments, so none to run it through is an
    error, not a silent forward-only timing."""
    layer = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="grads=True times a backward through the arguments"):
        compare(lambda: layer(torch.ones(2, 4)), lambda: layer(torch.ones(2, 4)), grads=True)
    with pytest.raises(ValueError, match="none does"):
        compare(layer, layer, torch.ones(2, 4), grads=True)
    x = torch.ones(2, 4, requires_grad=True)
    assert compare(layer, layer, x, grads=True, repeats=1).equivalent

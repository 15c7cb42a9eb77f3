"""linear_assignment / greedy_assignment: exact against scipy, batched, sync-free."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from torchdoctor.ops.assignment import greedy_assignment, linear_assignment
from torchdoctor.ops.reference.assignment import (
    greedy_assignment_reference,
    linear_assignment_reference,
)
from torchdoctor.testing import count_host_syncs

SIZES = (1, 2, 3, 5, 8, 12, 16)
KINDS = ("uniform", "integer_ties", "forbidden", "large", "tiny")


def _problems(kind: str, batch: int, rows: int, cols: int, generator) -> torch.Tensor:
    if kind == "integer_ties":
        return torch.randint(0, 3, (batch, rows, cols), generator=generator).double()
    cost = torch.rand(batch, rows, cols, generator=generator, dtype=torch.float64)
    if kind == "forbidden":
        cost = torch.randint(0, 4, (batch, rows, cols), generator=generator).double()
        cost[torch.rand(batch, rows, cols, generator=generator) < 0.3] = math.inf
    elif kind == "large":
        cost = cost * 1e12 + 1e15
    elif kind == "tiny":
        cost = cost * 1e-12
    return cost


def _scipy_total(matrix: np.ndarray) -> float | None:
    try:
        r, c = linear_sum_assignment(matrix)
    except ValueError:  # infeasible
        return None
    return float(matrix[r, c].sum())


def _check_against_scipy(cost: torch.Tensor, columns: torch.Tensor, total: torch.Tensor) -> int:
    batch, rows, cols = cost.shape
    checked = 0
    for b in range(batch):
        matrix = cost[b].numpy()
        expected = _scipy_total(matrix)
        if expected is None:
            assert total[b].item() == math.inf and (columns[b] == -1).all()
            checked += 1
            continue
        col = columns[b]
        assigned = col[col >= 0]
        assert len(assigned) == min(rows, cols)
        assert len(set(assigned.tolist())) == len(assigned)
        picked = matrix[np.nonzero(col.numpy() >= 0)[0], assigned.numpy()]
        assert np.isfinite(picked).all()
        assert total[b].item() == pytest.approx(float(picked.sum()), rel=1e-12, abs=0)
        scale = float(np.abs(picked).sum()) + 1e-300
        assert abs(total[b].item() - expected) <= 1e-9 * scale, (rows, cols, b)
        checked += 1
    return checked


@pytest.mark.parametrize("method", ["torch", "auto"])
def test_exact_against_scipy_on_thousands_of_problems(method):
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for rows in SIZES:
        for cols in SIZES:
            cost = torch.cat([_problems(kind, 10, rows, cols, generator) for kind in KINDS])
            if method == "auto":  # the scipy path raises on infeasible: keep it feasible
                cost = torch.where(torch.isinf(cost), 1e3, cost)
            result = linear_assignment(cost, method=method, check=False)
            checked += _check_against_scipy(cost, result.columns, result.total)
    assert checked >= 2000


def test_brute_force_exact_on_small_problems():
    generator = torch.Generator().manual_seed(1)
    checked = 0
    for rows in range(1, 6):
        for cols in range(1, 6):
            for kind in KINDS:
                cost = _problems(kind, 8, rows, cols, generator)
                result = linear_assignment(cost, method="brute", check=False)
                checked += _check_against_scipy(cost, result.columns, result.total)
    assert checked == 5 * 5 * len(KINDS) * 8


def test_subset_dp_exact_up_to_ten_columns():
    generator = torch.Generator().manual_seed(5)
    checked = 0
    for rows, cols in [(1, 1), (2, 7), (4, 4), (6, 3), (8, 8), (5, 10), (10, 10)]:
        cost = torch.cat([_problems(kind, 6, rows, cols, generator) for kind in KINDS])
        result = linear_assignment(cost, method="dp", check=False)
        checked += _check_against_scipy(cost, result.columns, result.total)
    assert checked == 7 * len(KINDS) * 6
    with pytest.raises(ValueError, match=r"subset DP over the larger side of the problem \(13\)"):
        linear_assignment(torch.zeros(2, 13), method="dp")


def test_maximize_matches_scipy_and_keeps_dtype():
    generator = torch.Generator().manual_seed(2)
    cost = torch.rand(6, 4, 7, generator=generator)
    for method in ("torch", "scipy", "dp", "brute"):
        result = linear_assignment(cost, maximize=True, method=method)
        _, expected = linear_assignment_reference(cost, maximize=True)
        assert result.total.dtype == torch.float32
        torch.testing.assert_close(result.total, expected)


def test_leading_dims_and_rectangular_shapes():
    generator = torch.Generator().manual_seed(3)
    cost = torch.rand(2, 3, 5, 4, generator=generator, dtype=torch.float64)
    result = linear_assignment(cost, method="torch")
    assert result.columns.shape == (2, 3, 5) and result.total.shape == (2, 3)
    assert ((result.columns == -1).sum(-1) == 1).all()  # 5 rows, 4 columns: one row left over
    columns, total = linear_assignment_reference(cost)
    torch.testing.assert_close(result.total, total)


def test_integer_costs_mixed_magnitudes_and_nan_in_greedy():
    generator = torch.Generator().manual_seed(6)
    costs = torch.randint(-50, 50, (20, 6, 9), generator=generator)
    result = linear_assignment(costs, method="torch")
    assert result.total.dtype == torch.float64
    _check_against_scipy(costs.double(), result.columns, result.total)
    mixed = torch.rand(20, 7, 7, generator=generator, dtype=torch.float64)
    mixed = mixed * 10.0 ** torch.randint(-12, 13, (20, 7, 7), generator=generator)
    for method in ("torch", "dp"):
        result = linear_assignment(mixed, method=method)
        _check_against_scipy(mixed, result.columns, result.total)
    with pytest.raises(TypeError, match="real float or integer"):
        linear_assignment(torch.ones(2, 2, dtype=torch.bool))
    with_nan = torch.tensor([[math.nan, 1.0], [2.0, 3.0]])
    assert greedy_assignment(with_nan).columns.tolist() == [1, 0]


def test_empty_problems():
    for shape in [(3, 0, 4), (3, 4, 0), (0, 2, 2)]:
        for method in ("torch", "scipy", "dp", "brute"):
            result = linear_assignment(torch.zeros(shape), method=method)
            assert result.columns.shape == shape[:2]
            assert (result.columns == -1).all() and (result.total == 0).all()


def test_nan_cost_raises_naming_the_problem():
    cost = torch.rand(3, 4, 4)
    cost[1, 2, 0] = math.nan
    for method in ("torch", "scipy", "dp", "brute"):
        with pytest.raises(ValueError, match=r"problem 1 has NaN"):
            linear_assignment(cost, method=method)


def test_all_forbidden_row_raises_naming_the_problem():
    cost = torch.rand(2, 3, 3, 3)
    cost[1, 2, 1, :] = math.inf
    for method in ("torch", "scipy", "dp", "brute"):
        with pytest.raises(ValueError, match=r"problem \(1, 2\) is infeasible"):
            linear_assignment(cost, method=method)


def test_wrong_sign_infinity_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="-inf costs"):
        linear_assignment(torch.tensor([[-math.inf, 1.0]]))
    with pytest.raises(ValueError, match=r"\+inf costs"):
        linear_assignment(torch.tensor([[math.inf, 1.0]]), maximize=True)
    with pytest.raises(ValueError, match="method must be one of"):
        linear_assignment(torch.zeros(2, 2), method="hungarian")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., rows, cols\)"):
        linear_assignment(torch.zeros(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        linear_assignment([[1.0]])


def test_no_host_sync_on_the_torch_and_brute_paths():
    cost = torch.rand(16, 6, 6)
    for method in ("torch", "dp", "brute"):
        with count_host_syncs() as syncs:
            linear_assignment(cost, method=method, check=False)
        assert syncs.count == 0, (method, syncs.ops)
    with count_host_syncs() as syncs:
        greedy_assignment(cost)
    assert syncs.count == 0, syncs.ops


def test_cpu_scipy_path_reads_the_costs_in_place_without_torch_level_host_reads():
    """On CPU, method="auto" hands the tensor's own memory to scipy: nothing a sync audit would
    count (on an accelerator "auto" takes the on-device solvers instead)."""
    from torch.overrides import TorchFunctionMode

    class HostReads(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in {"cpu", "numpy", "tolist", "item", "__bool__", "nonzero"}:
                self.names.append(name)
            return func(*args, **(kwargs or {}))

    cost = torch.rand(8, 5, 5, dtype=torch.float64)
    with count_host_syncs() as syncs, HostReads() as reads:
        result = linear_assignment(cost)
    assert syncs.count == 0 and reads.names == [], (syncs.ops, reads.names)
    expected = linear_assignment(cost, method="torch")
    assert torch.equal(result.columns, expected.columns)
    bad = cost.clone()
    bad[3, 1, 2] = math.nan
    with pytest.raises(ValueError, match="problem 3 has NaN costs"):
        linear_assignment(bad)


def test_greedy_matches_plain_reference():
    generator = torch.Generator().manual_seed(4)
    for rows, cols in [(1, 1), (3, 5), (6, 6), (7, 4)]:
        cost = torch.randint(0, 4, (20, rows, cols), generator=generator).double()
        cost[torch.rand(20, rows, cols, generator=generator) < 0.2] = math.inf
        for maximize in (False, True):
            work = torch.where(torch.isinf(cost), -math.inf, cost) if maximize else cost
            got = greedy_assignment(work, maximize=maximize)
            columns, total = greedy_assignment_reference(work, maximize=maximize)
            assert torch.equal(got.columns, columns)
            torch.testing.assert_close(got.total, total)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 7),
    cols=st.integers(1, 7),
    seed=st.integers(0, 2**31 - 1),
)
def test_properties_permutation_invariance_and_greedy_bound(rows, cols, seed):
    generator = torch.Generator().manual_seed(seed)
    cost = torch.randint(-5, 6, (rows, cols), generator=generator).double()
    best = linear_assignment(cost, method="torch").total
    row_perm = torch.randperm(rows, generator=generator)
    col_perm = torch.randperm(cols, generator=generator)
    shuffled = linear_assignment(cost[row_perm][:, col_perm], method="torch")
    assert shuffled.total.item() == best.item()
    assert greedy_assignment(cost).total.item() >= best.item()
    flipped = linear_assignment(-cost, maximize=True, method="torch").total
    assert flipped.item() == -best.item()


def test_greedy_total_dtype_follows_linear_assignment():
    for dtype in (torch.int32, torch.int64, torch.uint8):
        cost = torch.tensor([[3, 1], [2, 5]], dtype=dtype)
        assert greedy_assignment(cost).total.dtype == torch.float64
        assert greedy_assignment(torch.zeros(2, 3, 0, dtype=dtype)).total.dtype == torch.float64
    assert greedy_assignment(torch.rand(2, 2, dtype=torch.float32)).total.dtype == torch.float32


def test_subset_dp_limit_names_the_users_problem_size():
    with pytest.raises(ValueError, match=r"larger side of the problem \(13\)"):
        linear_assignment(torch.rand(13, 3), method="dp")


@pytest.mark.parametrize("maximize", [False, True])
def test_auto_without_check_gives_infeasible_problems_minus_one_and_inf_on_cpu(maximize):
    """The documented check=False contract holds for "auto" on CPU (scipy underneath) too."""
    inf = math.inf
    cost = torch.tensor([[[inf, 1.0], [inf, 2.0]], [[1.0, 2.0], [3.0, 0.5]]])
    tall = torch.tensor([[[1.0, inf], [2.0, inf], [0.5, inf]]])  # 3 rows, column 1 forbidden
    sign = -1.0 if maximize else 1.0
    for costs, columns, totals in (
        (cost, [[-1, -1], [0, 1]], [inf, 1.5]),  # problem 0: both rows need column 1
        (tall, [[-1, -1, -1]], [inf]),
    ):
        auto = linear_assignment(sign * costs, maximize, check=False)
        assert auto.columns.tolist() == columns
        assert auto.total.tolist() == [sign * total for total in totals]
        on_device = linear_assignment(sign * costs, maximize, check=False, method="torch")
        assert torch.equal(auto.columns, on_device.columns)
        assert torch.equal(auto.total, on_device.total)
        for method in ("auto", "scipy"):  # check=True, and method="scipy" always, still raise
            with pytest.raises(ValueError, match="problem 0 is infeasible"):
                linear_assignment(sign * costs, maximize, method=method, check=method == "auto")


def test_greedy_ranks_64_bit_integer_costs_exactly():
    """int64 costs above 2**53 once tied after the cast to float64."""
    big = 2**60
    assert greedy_assignment(torch.tensor([[big + 1, big]])).columns.tolist() == [1]
    assert greedy_assignment(torch.tensor([[big + 1, big]]), maximize=True).columns.tolist() == [0]
    extremes = torch.tensor([[2**63 - 1, -(2**63)], [2**63 - 2, 2**63 - 1]])
    assert greedy_assignment(extremes).columns.tolist() == [1, 0]
    assert greedy_assignment(extremes, maximize=True).columns.tolist() == [0, 1]
    generator = torch.Generator().manual_seed(11)
    small = torch.randint(-3, 3, (6, 4, 5), generator=generator)  # many ties
    for maximize in (False, True):
        result = greedy_assignment(small * 2**40 + big, maximize=maximize)
        expected = greedy_assignment(small.double(), maximize=maximize)
        assert torch.equal(result.columns, expected.columns)
    unsigned = torch.tensor([[2**63 + 1, 2**63]], dtype=torch.uint64)
    assert greedy_assignment(unsigned).columns.tolist() == [1]


@pytest.mark.parametrize("maximize", [False, True])
def test_check_false_nan_and_wrong_sign_infinity_agree_across_methods(maximize):
    sign = -1.0 if maximize else 1.0
    nan_cost = sign * torch.tensor([[math.nan, 1.0], [1.0, 2.0]])
    wrong = sign * torch.tensor([[-math.inf, 1.0], [1.0, 2.0]])
    for method in ("torch", "dp", "brute", "auto"):
        result = linear_assignment(nan_cost, maximize, method=method, check=False)
        assert result.columns.tolist() == [1, 0] and result.total.item() == 2.0 * sign, method
        result = linear_assignment(wrong, maximize, method=method, check=False)
        assert result.columns.tolist() == [-1, -1], method
        assert result.total.item() == (-math.inf if maximize else math.inf), method
        for cost in (nan_cost, wrong):  # check=True (the default) refuses both
            with pytest.raises(ValueError, match=r"linear_assignment: the problem has"):
                linear_assignment(cost, maximize, method=method)


def test_integer_totals_are_summed_exactly():
    # 2**62 + 1 and 1 - 2**62 are no float64s: summed in float64 the optimal total 2 read 0,
    # though the choice was right (totals of such costs that float64 holds must be exact).
    cost = torch.tensor([[[2**62 + 1, 2**62 + 5], [2**62 + 5, 1 - 2**62]]])
    for method in ("auto", "scipy", "torch", "dp", "brute"):
        result = linear_assignment(cost, method=method)
        assert result.columns.tolist() == [[0, 1]] and result.total.tolist() == [2.0], method
    greedy = greedy_assignment(cost)
    assert greedy.columns.tolist() == [[0, 1]] and greedy.total.tolist() == [2.0]
    assert greedy_assignment_reference(cost)[1].tolist() == [2.0]
    assert greedy_assignment(-cost, maximize=True).total.tolist() == [-2.0]
    huge = torch.tensor([[2**62, 2**62], [2**62, 2**62]])  # int64 would wrap: float64's sum
    assert linear_assignment(huge).total.item() == 2.0**63

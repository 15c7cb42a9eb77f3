"""Batched linear assignment: exact (``linear_assignment``) and greedy (``greedy_assignment``).

Seed 000 matched the parts of two augmented views with ``scipy.optimize.linear_sum_assignment``
called per image inside the training step: a device-to-host copy and a sync per problem. Here a
whole batch of problems is one call.

Example:
    >>> import torch
    >>> from torchdoctor.ops.assignment import linear_assignment
    >>> cost = torch.tensor([[[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]])
    >>> result = linear_assignment(cost)
    >>> result.columns.tolist(), result.total.tolist()
    ([[1, 0, 2]], [5.0])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from torchdoctor.ops._assignment_solvers import (
    solve_brute_force,
    solve_shortest_augmenting_path,
    solve_subset_dp,
)
from torchdoctor.ops._flags import require_flag
from torchdoctor.ops._host import cpu_array
from torchdoctor.ops._validation import require_data, widen_integer

_METHODS = ("auto", "scipy", "torch", "dp", "brute")
#: on accelerators, method="auto" enumerates permutations up to this many (6! = 720) ...
_AUTO_BRUTE_MAX_MAPS = 720
#: ... and runs the subset DP up to this many columns (the smaller side of the problem).
_AUTO_DP_MAX_COLS = 10


class Assignment(NamedTuple):
    """Result of an assignment: ``columns`` ``(..., R)`` int64, the column of each row or -1
    for an unassigned row; ``total`` ``(...)``, the summed cost of the assigned pairs.

    Example:
        >>> import torch
        >>> result = linear_assignment(torch.tensor([[4.0, 1.0], [2.0, 8.0]]))
        >>> result.columns.tolist(), float(result.total)
        ([1, 0], 3.0)
    """

    columns: torch.Tensor
    total: torch.Tensor


def _check_cost(cost: torch.Tensor, name: str, argument: str = "cost") -> None:
    if not isinstance(cost, torch.Tensor):
        raise TypeError(f"{name}: {argument} must be a torch.Tensor, got {type(cost).__name__}")
    if cost.dim() < 2:
        raise ValueError(
            f"{name}: {argument} must have shape (..., rows, cols), got shape "
            f"{tuple(cost.shape)}; add a leading dimension with {argument}[None] for a single row"
        )
    if cost.is_complex() or cost.dtype == torch.bool:
        raise TypeError(
            f"{name}: {argument} must be a real float or integer tensor, got {cost.dtype}"
        )


def _problem_name(flat_index: int, batch_shape: tuple[int, ...]) -> str:
    if len(batch_shape) == 0:
        return "the problem"
    index = tuple(int(i) for i in np.unravel_index(flat_index, batch_shape))
    return f"problem {index[0] if len(index) == 1 else index}"


def _raise_for_bad(
    nan: torch.Tensor, invalid: torch.Tensor, infeasible: torch.Tensor, batch_shape, maximize
) -> None:
    """One host read of the per-problem flags; raise naming the first bad problem."""
    _raise_for_host_flags(torch.stack([nan, invalid, infeasible]).cpu().numpy(), batch_shape,
                          maximize)  # fmt: skip


def _raise_for_host_flags(flags: np.ndarray, batch_shape, maximize) -> None:
    """``flags`` (3, B) bool on the host: NaN, wrong-signed infinity, infeasible."""
    if not flags.any():
        return
    problem, kind = (int(x) for x in np.argwhere(flags.T)[0])  # the first bad problem
    where = _problem_name(problem, batch_shape)
    if kind == 0:
        raise ValueError(f"linear_assignment: {where} has NaN costs; replace them first")
    if kind == 1:
        bad = "+inf" if maximize else "-inf"
        ok = "-inf" if maximize else "+inf"
        raise ValueError(
            f"linear_assignment: {where} has {bad} costs; with maximize={maximize} forbidden "
            f"pairs are {ok}, other entries must be finite"
        )
    raise ValueError(
        f"linear_assignment: {where} is infeasible: no assignment of every row (or column, "
        f"whichever is fewer) avoids the forbidden ({'-' if maximize else '+'}inf) pairs"
    )


def _host_costs(work: torch.Tensor, batch_shape, maximize: bool) -> np.ndarray:
    """The cost matrices on the host, checked for NaN and wrong-signed infinities.

    A CPU tensor is read in place (no copy, and no torch-level read a sync audit would count:
    there is no device to wait for); an accelerator tensor is copied, one counted sync.
    """
    if work.device.type == "cpu":
        matrices = cpu_array(work)
    else:
        matrices = work.detach().cpu().numpy()
    flat = matrices.reshape(matrices.shape[0], matrices.shape[1] * matrices.shape[2])
    flags = np.stack([np.isnan(flat).any(1), (flat == -np.inf).any(1),
                      np.zeros(flat.shape[0], dtype=bool)])  # fmt: skip
    _raise_for_host_flags(flags, batch_shape, maximize)
    return matrices


def _solve_scipy(
    work: torch.Tensor, batch_shape, maximize: bool, strict: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """scipy per problem; an infeasible problem raises, or with ``strict=False`` is flagged."""
    from scipy.optimize import linear_sum_assignment

    matrices = _host_costs(work, batch_shape, maximize)
    batch, rows, _ = matrices.shape
    columns = np.full((batch, rows), -1, dtype=np.int64)
    infeasible = np.zeros(batch, dtype=bool)
    for problem in range(batch):
        try:
            row_ind, col_ind = linear_sum_assignment(matrices[problem])
        except ValueError as error:  # NaN and -inf were rejected above: infeasible
            if not strict:
                infeasible[problem] = True
                continue
            raise ValueError(
                f"linear_assignment: {_problem_name(problem, batch_shape)} is infeasible "
                f"(scipy: {error}); every row needs a finite-cost column"
            ) from None
        columns[problem, row_ind] = col_ind
    return torch.from_numpy(columns).to(work.device), torch.from_numpy(infeasible).to(work.device)


def linear_assignment(
    cost: torch.Tensor, maximize: bool = False, *, method: str = "auto", check: bool = True
) -> Assignment:
    """Exact minimum-cost (or maximum, ``maximize=True``) assignment, batched over leading dims.

    ``cost`` has shape ``(..., R, C)``; rows may be fewer or more than columns. Each row gets at
    most one column and each column at most one row; ``min(R, C)`` pairs are made, rows left
    over get ``-1``. Forbidden pairs are ``+inf`` (``-inf`` when maximizing). The total equals
    ``scipy.optimize.linear_sum_assignment``'s on every problem; among ties another permutation
    of equal cost may be returned.

    ``method``:
      - ``"scipy"``: scipy's compiled solver per problem on the host: a CPU tensor's memory is
        read in place; an accelerator tensor is copied over and the result back (one sync).
      - ``"torch"``: the Hungarian method in shortest-augmenting-path form vectorized across the
        batch (``O(R^2 C)`` work per problem, ``R (R + 1)`` vector steps, no host sync).
      - ``"dp"``: dynamic programming over column subsets (``O(R 2^C C)`` work, ``~3 R`` op
        launches; ``max(R, C) <= 12``).
      - ``"brute"``: every injective map (``C!/(C-R)!``, for ``min(R, C)`` up to about 8).
      - ``"auto"``: scipy on CPU tensors (fewer op launches than any vectorized solver there);
        on other devices brute force when ``max(R, C) <= 6``, the subset DP up to 10, else
        ``"torch"``.

    Costs are solved in float64; ``total`` has the input's float dtype (float64 for integers,
    whose totals are summed exactly up to ``2**62``), summed in float64 and rounded once.
    Integer costs beyond ``2**53`` are rounded to float64 for the solve: costs closer than
    their float64 spacing tie there, and the methods (scipy's too) may pick different
    assignments among those ties, whose exact integer totals differ by that rounding.
    With ``check=True`` NaN, wrong-sign infinities and infeasible problems raise ``ValueError``
    naming the problem; on an accelerator this costs one host sync for the whole batch. With
    ``check=False`` there is none (except with ``method="scipy"``, which always checks and
    raises as ``check=True`` does). ``check=False``'s contract: costs are finite, or
    ``+inf`` (``-inf`` when maximizing) for forbidden pairs; outside it every other method,
    ``"auto"`` on CPU included, gives the same documented result: a NaN cost is a forbidden
    pair, and a wrong-sign infinity (``-inf`` when minimizing, ``+inf`` when maximizing) makes
    its problem infeasible. Infeasible problems get columns ``-1`` and total ``inf``
    (``-inf`` when maximizing).
    Finite costs so large that a sum of them overflows float64 (``|cost| * min(R, C)`` near
    ``1.8e308``) read as forbidden pairs in the vectorized solvers; use ``method="scipy"``.

    Example:
        >>> import torch
        >>> cost = torch.tensor([[1.0, 2.0, 0.5], [0.0, 3.0, 1.0]])
        >>> linear_assignment(cost).columns.tolist()
        [2, 0]
        >>> linear_assignment(cost, maximize=True, method="torch").columns.tolist()
        [0, 1]
    """
    _check_cost(cost, "linear_assignment")
    maximize = require_flag(maximize, "linear_assignment: maximize")
    check = require_flag(check, "linear_assignment: check")
    if method not in _METHODS:
        raise ValueError(f"linear_assignment: method must be one of {_METHODS}, got {method!r}")
    *batch_shape, rows, cols = cost.shape
    batch_shape = tuple(batch_shape)
    out_dtype = cost.dtype if cost.is_floating_point() else torch.float64
    batch = math.prod(batch_shape)
    work = cost.detach().to(torch.float64).reshape(batch, rows, cols)
    if maximize:
        work = -work
    transpose = rows > cols
    if transpose:
        work = work.transpose(1, 2)
    batch, small, large = work.shape

    strict = check or method == "scipy"  # "auto" keeps the check=False contract on CPU too
    if strict:
        require_data(cost=cost)
    wrong_sign = None
    if not strict:  # one documented outcome for every method (no sync: elementwise only)
        wrong_sign = (work == -math.inf).flatten(1).any(dim=1)
        work = torch.where(torch.isnan(work) | (work == -math.inf), math.inf, work)
    if method == "auto":
        if cost.device.type == "cpu":
            method = "scipy"
        else:
            if math.perm(large, small) <= _AUTO_BRUTE_MAX_MAPS:
                method = "brute"
            elif large <= _AUTO_DP_MAX_COLS:
                method = "dp"
            else:
                method = "torch"

    if method == "scipy":
        small_cols, infeasible = _solve_scipy(work, batch_shape, maximize, strict)
    elif batch * small == 0:
        small_cols = torch.full((batch, small), -1, dtype=torch.long, device=work.device)
        infeasible = torch.zeros(batch, dtype=torch.bool, device=work.device)
    elif method == "brute":
        small_cols, infeasible = solve_brute_force(work)
    elif method == "dp":
        small_cols, infeasible = solve_subset_dp(work)
    else:
        small_cols, infeasible = solve_shortest_augmenting_path(work)
    if wrong_sign is not None:
        infeasible = infeasible | wrong_sign
        small_cols = torch.where(wrong_sign.unsqueeze(1), -1, small_cols)
    if check and method != "scipy":
        nan = torch.isnan(work).flatten(1).any(dim=1)
        invalid = (work == -math.inf).flatten(1).any(dim=1)
        _raise_for_bad(nan, invalid, infeasible, batch_shape, maximize)

    if transpose:  # small_cols maps each column to a row: invert it
        columns = torch.full((batch, rows + 1), -1, dtype=torch.long, device=work.device)
        slot = torch.where(small_cols >= 0, small_cols, rows)  # -1 lands in a spare slot
        columns.scatter_(1, slot, torch.arange(cols, device=work.device).expand(batch, cols))
        columns = columns[:, :rows]
    else:
        columns = small_cols
    total = _total(cost.reshape(batch, rows, cols), columns)
    total = torch.where(infeasible, -math.inf if maximize else math.inf, total)
    return Assignment(columns.reshape(*batch_shape, rows), total.to(out_dtype).reshape(batch_shape))


def assignment_cost(cost: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Sum of ``cost[..., r, columns[..., r]]`` over assigned rows (``columns >= 0``).

    Example:
        >>> import torch
        >>> assignment_cost(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1, -1]))
        tensor(2.)
    """
    if cost.shape[-1] == 0:
        return cost.new_zeros(cost.shape[:-2])
    picked = cost.gather(-1, columns.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(columns >= 0, picked, 0).sum(dim=-1)


def _total(cost: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """The assignment's total in float64: float costs summed in float64; integer costs summed
    exactly in int64 (``2**62 + 1`` and ``1 - 2**62`` make 2, not float64's 0) wherever the
    total stays below ``2**62`` (else float64's sum: int64's would wrap). No host sync.

    Example:
        >>> _total(torch.tensor([[[2**62 + 1, 0], [0, 1 - 2**62]]]), torch.tensor([[0, 1]]))
        tensor([2.], dtype=torch.float64)
    """
    wide = assignment_cost(cost.to(torch.float64), columns)
    if cost.is_floating_point():
        return wide
    exact = assignment_cost(widen_integer(cost).long(), columns)  # (wraps only past 2**63)
    return torch.where(wide.abs() < 2.0**62, exact.to(torch.float64), wide)


def _dense_ranks(work: torch.Tensor) -> torch.Tensor:
    """Each problem's costs ``(B, R, C)`` replaced by their dense rank, as float64: the same
    order and ties as the integers themselves, exact in float64 (ranks are below ``R * C``).

    Example:
        >>> _dense_ranks(torch.tensor([[[2**60 + 1, 2**60], [7, 2**60]]])).tolist()
        [[[2.0, 1.0], [0.0, 1.0]]]
    """
    flat = work.flatten(1)
    values, order = flat.sort(dim=1)
    new_value = torch.ones_like(values, dtype=torch.long)
    new_value[:, 1:] = values[:, 1:] != values[:, :-1]
    ranks = torch.empty_like(order).scatter_(1, order, new_value.cumsum(dim=1) - 1)
    return ranks.view(work.shape).to(torch.float64)


def greedy_assignment(cost: torch.Tensor, maximize: bool = False) -> Assignment:
    """Greedy assignment, batched: repeatedly take the cheapest remaining pair of each problem.

    ``min(R, C)`` vector steps, no host sync; not optimal (use :func:`linear_assignment` for
    that) but cheap and one-to-one. Forbidden pairs (``+inf``, or ``-inf`` when maximizing)
    are never taken: a row whose remaining pairs are all forbidden gets ``-1``. Ties go to the
    lowest flat index ``r * C + c``. NaN entries are never taken either. The opposite infinity
    (``-inf`` when minimizing) is the best pair there is: taken first, making the total
    ``-inf``. ``total`` is summed as :func:`linear_assignment`'s, in the cost's dtype (float64
    for integer costs). Integer costs are ranked exactly, also 64-bit ones beyond float64's
    ``2**53`` (one sort per problem).

    Example:
        >>> import torch
        >>> cost = torch.tensor([[1.0, 0.9], [0.0, 5.0]])
        >>> greedy_assignment(cost).columns.tolist()
        [1, 0]
    """
    _check_cost(cost, "greedy_assignment")
    maximize = require_flag(maximize, "greedy_assignment: maximize")
    *batch_shape, rows, cols = cost.shape
    work = cost.detach().reshape(math.prod(batch_shape), rows, cols)
    if work.dtype in (torch.int64, torch.uint64):  # float64 would tie costs above 2**53
        work = _dense_ranks(work)
    elif not work.is_floating_point():  # exact in float64
        work = work.to(torch.float64)
    work = -work if maximize else work.clone()
    work = torch.where(torch.isnan(work), math.inf, work)
    batch = work.shape[0]
    columns = torch.full((batch, rows), -1, dtype=torch.long, device=cost.device)
    row_index = torch.arange(rows, device=cost.device)
    column_index = torch.arange(cols, device=cost.device)
    inf = torch.tensor(math.inf, dtype=work.dtype, device=cost.device)
    for _ in range(min(rows, cols)):
        best, flat = work.flatten(1).min(dim=1)
        ok = ~torch.isinf(best) | (best < 0)  # a -inf pair is still taken
        row, col = flat // cols, flat % cols
        taken_row = (row_index == row.unsqueeze(1)) & ok.unsqueeze(1)  # (B, R)
        columns = torch.where(taken_row, col.unsqueeze(1), columns)
        taken_col = column_index == col.unsqueeze(1)  # (B, C)
        taken = (taken_row.unsqueeze(2) | taken_col.unsqueeze(1)) & ok.view(-1, 1, 1)
        work = torch.where(taken, inf, work)
    total = _total(cost.reshape(batch, rows, cols), columns)  # as linear_assignment's
    total = total.to(cost.dtype if cost.is_floating_point() else torch.float64)
    return Assignment(columns.reshape(*batch_shape, rows), total.reshape(batch_shape))

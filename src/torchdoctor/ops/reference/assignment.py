"""Seed 000's matching: ``scipy.optimize.linear_sum_assignment`` per problem, in a Python loop.

Each problem is copied to the host on its own (``.cpu()``, one sync each on an accelerator),
solved, and its result copied back. This is the "before" of ``torchdoctor.ops.linear_assignment``.

Example:
    >>> import torch
    >>> cost = torch.tensor([[[4.0, 1.0], [2.0, 3.0]]])
    >>> columns, total = linear_assignment_reference(cost)
    >>> columns.tolist(), total.tolist()
    ([[1, 0]], [3.0])
"""

from __future__ import annotations

import math

import torch

__all__ = ["linear_assignment_reference", "greedy_assignment_reference"]


def linear_assignment_reference(
    cost: torch.Tensor, maximize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-problem scipy loop; returns ``(columns (..., R), total (...))`` like the fast op.

    Example:
        >>> import torch
        >>> linear_assignment_reference(torch.tensor([[1.0, 0.0]]))[0].tolist()
        [1]
    """
    from scipy.optimize import linear_sum_assignment

    *batch_shape, rows, cols = cost.shape
    flat = cost.reshape(math.prod(batch_shape), rows, cols)
    columns, totals = [], []
    for problem in flat:
        matrix = problem.detach().cpu().numpy()  # one host copy (and sync) per problem
        row_ind, col_ind = linear_sum_assignment(matrix, maximize=maximize)
        column = torch.full((rows,), -1, dtype=torch.long)
        column[torch.as_tensor(row_ind, dtype=torch.long)] = torch.as_tensor(col_ind)
        columns.append(column.to(cost.device))
        totals.append(float(matrix[row_ind, col_ind].sum()))
    out_dtype = cost.dtype if cost.is_floating_point() else torch.float64
    columns_t = torch.stack(columns) if columns else torch.empty(0, rows, dtype=torch.long, device=cost.device)
    total_t = torch.tensor(totals, dtype=out_dtype, device=cost.device)
    return columns_t.reshape(*batch_shape, rows), total_t.reshape(batch_shape)


def greedy_assignment_reference(
    cost: torch.Tensor, maximize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain greedy per problem: take the cheapest remaining pair until rows or columns run out.

    Example:
        >>> import torch
        >>> greedy_assignment_reference(torch.tensor([[1.0, 0.9], [0.0, 5.0]]))[0].tolist()
        [1, 0]
    """
    *batch_shape, rows, cols = cost.shape
    flat = cost.reshape(math.prod(batch_shape), rows, cols)
    columns = torch.full((flat.shape[0], rows), -1, dtype=torch.long)
    totals = []
    for b, problem in enumerate(flat.tolist()):
        sign = -1 if maximize else 1  # (an int: int64 costs past 2**53 stay exact)
        pairs = sorted(
            (sign * problem[r][c], r * cols + c)
            for r in range(rows)
            for c in range(cols)
            if not math.isnan(problem[r][c])
        )
        free_rows, free_cols, total = set(range(rows)), set(range(cols)), 0  # (ints: exact)
        for value, flat_index in pairs:
            r, c = divmod(flat_index, cols)
            if value == math.inf:
                break
            if r in free_rows and c in free_cols:
                columns[b, r] = c
                total += problem[r][c]
                free_rows.discard(r)
                free_cols.discard(c)
        totals.append(total)
    total_t = torch.tensor(totals, dtype=cost.dtype if cost.is_floating_point() else torch.float64)
    return columns.reshape(*batch_shape, rows), total_t.reshape(batch_shape)

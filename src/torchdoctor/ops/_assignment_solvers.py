"""Exact batched linear-assignment solvers used by :func:`torchdoctor.ops.linear_assignment`.

All solvers take a float64 cost tensor of shape ``(B, R, C)`` with ``R <= C`` (the caller
transposes wider problems), forbidden pairs as ``+inf``, and return ``(columns, infeasible)``:
``columns`` ``(B, R)`` int64 (the column of each row; ``-1`` where the problem is infeasible) and
``infeasible`` ``(B,)`` bool. They never synchronize with the host.

- :func:`solve_shortest_augmenting_path`: the Hungarian method in its shortest-augmenting-path
  form (Kuhn-Munkres with row/column potentials and Dijkstra-like label updates, the same
  family as Jonker-Volgenant and scipy's solver), one row at a time, vectorized across the batch.
  Every problem runs the same fixed number of steps (row ``i`` needs at most ``i + 1`` label
  updates and at most ``i + 1`` augmentation steps), finished problems are masked, so there is
  no data-dependent control flow. Work ``O(R^2 C)`` per problem; ``R (R + 1)`` sequential
  vector steps of ``O(B C)`` each. Exact for float costs up to rounding of the potentials.
- :func:`solve_brute_force`: every injective row-to-column map, ``C! / (C - R)!`` of them,
  summed and minimized in one gather. Exact; fastest on accelerators for ``C <= 6``.
- :func:`solve_subset_dp`: dynamic programming over column subsets, one vector step per row.
  Exact; ``O(R 2^C C)`` work but only ~3 op launches per row, for ``C <= 10`` on accelerators.

Example:
    >>> import torch
    >>> cost = torch.tensor([[[4.0, 1.0], [2.0, 3.0]]], dtype=torch.float64)
    >>> solve_shortest_augmenting_path(cost)[0].tolist()
    [[1, 0]]
"""

from __future__ import annotations

import itertools
import math

import torch

#: largest number of injective maps solve_brute_force will enumerate.
BRUTE_FORCE_MAX_MAPS = 40320


def solve_shortest_augmenting_path(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian / shortest augmenting path, vectorized over the batch dimension.

    Example:
        >>> import torch
        >>> cost = 1 - torch.eye(3, dtype=torch.float64)[None]
        >>> cols, bad = solve_shortest_augmenting_path(cost)
        >>> cols.tolist(), bad.tolist()
        ([[0, 1, 2]], [False])
    """
    batch, rows, cols = cost.shape
    device, dtype = cost.device, cost.dtype
    inf = torch.tensor(math.inf, dtype=dtype, device=device)
    # 1-based layout as in the textbook algorithm: row 0 and column 0 are virtual.
    padded = torch.zeros(batch, rows + 1, cols + 1, dtype=dtype, device=device)
    padded[:, 1:, 1:] = cost
    u = torch.zeros(batch, rows + 1, dtype=dtype, device=device)  # row potentials
    v = torch.zeros(batch, cols + 1, dtype=dtype, device=device)  # column potentials
    owner = torch.zeros(batch, cols + 1, dtype=torch.long, device=device)  # row of column j
    way = torch.zeros(batch, cols + 1, dtype=torch.long, device=device)
    infeasible = torch.zeros(batch, dtype=torch.bool, device=device)
    column_index = torch.arange(cols + 1, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)

    def at(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # table[b, index[b]]
        return table.gather(1, index.unsqueeze(1)).squeeze(1)

    for row in range(1, rows + 1):
        owner[:, 0] = row
        current = torch.zeros(batch, dtype=torch.long, device=device)  # j0
        min_reduced = torch.full((batch, cols + 1), math.inf, dtype=dtype, device=device)
        used = torch.zeros(batch, cols + 1, dtype=torch.bool, device=device)
        active = ~infeasible
        for _ in range(row):
            used |= (column_index == current.unsqueeze(1)) & active.unsqueeze(1)
            owner_row = at(owner, current)  # i0
            cost_row = padded.gather(1, owner_row.view(batch, 1, 1).expand(batch, 1, cols + 1))
            reduced = cost_row.squeeze(1) - at(u, owner_row).unsqueeze(1) - v
            better = (~used) & (reduced < min_reduced) & active.unsqueeze(1)
            min_reduced = torch.where(better, reduced, min_reduced)
            way = torch.where(better, current.unsqueeze(1), way)
            delta, nearest = torch.where(used, inf, min_reduced).min(dim=1)
            stuck = active & torch.isinf(delta)  # no reachable free column: infeasible
            infeasible |= stuck
            active = active & ~stuck
            delta = torch.where(active, delta, zero)
            used_active = used & active.unsqueeze(1)
            shift = torch.where(used_active, delta.unsqueeze(1), zero)
            u.scatter_add_(1, torch.where(used_active, owner, 0), shift)
            v = v - shift
            min_reduced = torch.where(
                (~used) & active.unsqueeze(1), min_reduced - delta.unsqueeze(1), min_reduced
            )
            current = torch.where(active, nearest, current)
            active = active & (at(owner, current) != 0)
        # Augment along the alternating path recorded in `way`.
        moving = ~infeasible
        for _ in range(row):
            previous = at(way, current)
            moved = torch.where(moving, at(owner, previous), at(owner, current))
            owner.scatter_(1, current.unsqueeze(1), moved.unsqueeze(1))
            current = torch.where(moving, previous, current)
            moving = moving & (current != 0)

    columns = torch.full((batch, rows + 1), -1, dtype=torch.long, device=device)
    column_ids = torch.arange(-1, cols, device=device).expand(batch, cols + 1)
    columns.scatter_(1, owner[:, 1:], column_ids[:, 1:])  # owner 0 (free) lands in slot 0
    columns = columns[:, 1:]
    columns = torch.where(infeasible.unsqueeze(1), -1, columns)
    return columns, infeasible


def injective_maps(rows: int, cols: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """All injective maps of ``rows`` rows into ``cols`` columns, shape ``(cols!/(cols-rows)!, rows)``.

    Example:
        >>> injective_maps(2, 2).tolist()
        [[0, 1], [1, 0]]
    """
    count = math.perm(cols, rows)
    if count > BRUTE_FORCE_MAX_MAPS:
        raise ValueError(
            f"brute force over {rows}x{cols} problems needs {count} permutations (limit "
            f"{BRUTE_FORCE_MAX_MAPS}); use method='torch' or method='scipy' instead"
        )
    maps = list(itertools.permutations(range(cols), rows))
    return torch.tensor(maps, dtype=torch.long, device=device).reshape(len(maps), rows)


def solve_brute_force(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimize over every injective map at once (exact; for tiny problems).

    Example:
        >>> import torch
        >>> cols, bad = solve_brute_force(torch.tensor([[[4.0, 1.0], [2.0, 3.0]]]))
        >>> cols.tolist()
        [[1, 0]]
    """
    batch, rows, cols = cost.shape
    maps = injective_maps(rows, cols, cost.device)  # (P, R)
    count = maps.shape[0]
    picked = cost.gather(2, maps.t().unsqueeze(0).expand(batch, rows, count))  # (B, R, P)
    best_total, best = picked.sum(dim=1).min(dim=1)
    infeasible = torch.isinf(best_total) | torch.isnan(best_total)
    columns = torch.where(infeasible.unsqueeze(1), -1, maps.index_select(0, best))
    return columns, infeasible


#: widest problem solve_subset_dp accepts (its memory is B * 2^C * C).
SUBSET_DP_MAX_COLS = 12


def solve_subset_dp(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic programming over column subsets: ``best[S]`` = cheapest way to give the first
    ``|S|`` rows the columns ``S``; one vector step per row, then a backtrack.

    Exact; ``O(R 2^C C)`` work per problem but only about ``3 R`` op launches for the whole
    batch, which is what counts on an accelerator for ``C <= 10`` or so.

    Example:
        >>> import torch
        >>> cols, bad = solve_subset_dp(torch.tensor([[[4.0, 1.0], [2.0, 3.0]]]))
        >>> cols.tolist()
        [[1, 0]]
    """
    batch, rows, cols = cost.shape
    if cols > SUBSET_DP_MAX_COLS:
        raise ValueError(
            f"subset DP over the larger side of the problem ({cols}) needs 2^{cols} states per "
            f"problem (limit {SUBSET_DP_MAX_COLS}); use method='torch' or method='scipy' instead"
        )
    device = cost.device
    states = 1 << cols
    masks = torch.arange(states, device=device)
    column_bit = 1 << torch.arange(cols, device=device)
    has_column = (masks.unsqueeze(1) & column_bit) != 0  # (S, C)
    size = has_column.sum(1)
    without = (masks.unsqueeze(1) ^ column_bit).reshape(-1)  # S minus column c (when c in S)
    best = torch.full((batch, states), math.inf, dtype=cost.dtype, device=device)
    best[:, 0] = 0
    choices = []
    for row in range(rows):
        allowed = has_column & (size == row + 1).unsqueeze(1)  # (S, C)
        candidate = best.index_select(1, without).view(batch, states, cols)
        candidate = candidate + cost[:, row].unsqueeze(1)
        candidate = candidate.masked_fill(~allowed, math.inf)
        best, choice = candidate.min(dim=2)
        choices.append(choice)
    best_total, state = best.min(dim=1)
    columns = torch.empty(batch, rows, dtype=torch.long, device=device)
    for row in reversed(range(rows)):
        column = choices[row].gather(1, state.unsqueeze(1)).squeeze(1)
        columns[:, row] = column
        state = state ^ (1 << column)
    infeasible = torch.isinf(best_total) | torch.isnan(best_total)
    return torch.where(infeasible.unsqueeze(1), -1, columns), infeasible

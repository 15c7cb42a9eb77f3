"""The NumPy engine of the greedy DPP steps, and the tie rule every engine shares.

:func:`greedy_arrays` runs Chen's greedy (``ops.dpp``) on host arrays as NumPy calls, where an
op costs 1-3 us instead of torch's 5-10 us on CPU tensors: the engine of ``backend="numpy"``
and the fallback of ``"auto"`` without numba. :func:`tie_tolerance` says how close to the best
gain counts as a tie, for this engine, the torch engine and the compiled one alike.

Example:
    >>> import numpy as np
    >>> kernel = np.array([[[2.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 2.0]]])
    >>> items, gains = greedy_arrays(kernel, True, None, np.array([[2.0, 2.0, 2.0]]), steps=3)
    >>> items[:, 0].tolist()  # equal gains at every step: the lowest index each time
    [0, 1, 2]
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["greedy_arrays", "tie_tolerance", "TIE_ULPS"]

#: at step ``t`` (from 0) gains ``(t + 1) * TIE_ULPS`` ulps of their starting gains apart tie:
#: each step's update adds rounding (exact ties of integer problems stay within that on every
#: engine, and random float32 near-ties are no more affected than by rounding itself)
TIE_ULPS = 4


def tie_tolerance(gains):
    """Each item's rounding reach per step: ``TIE_ULPS`` ulps of its finite starting gain (0
    for an infinite or masked one). Gains equal in exact arithmetic (duplicate or symmetric
    items) land a few ulps apart, differently on each engine; at step ``t`` items ``j`` with
    ``gain_j + (t + 1) tol_j >= best - (t + 1) tol_best`` tie with the best and the lowest
    index among them is taken, on every engine. ``gains`` ``(B, N)``, a tensor or a NumPy
    array; the result is of the same kind.

    Example:
        >>> (tie_tolerance(np.array([[1.0, -np.inf, 0.5]])) / 2.0**-52).tolist()
        [[4.0, 0.0, 2.0]]
    """
    if isinstance(gains, np.ndarray):
        finite = np.where(np.isfinite(gains), gains, 0).clip(min=0)
        return finite * (TIE_ULPS * np.finfo(gains.dtype).eps)
    finite = torch.where(torch.isfinite(gains), gains, 0).clamp(min=0)
    return finite * (TIE_ULPS * torch.finfo(gains.dtype).eps)


def greedy_arrays(
    array: np.ndarray,
    is_kernel: bool,
    q: np.ndarray | None,
    gains: np.ndarray,
    steps: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Chen's greedy steps on host arrays: ``(items, best gains)``, each ``(steps, B)``.

    ``array`` ``(B, N, N)`` kernel or ``(B, N, d)`` features, ``q`` ``(B, N)`` or ``None``,
    ``gains`` ``(B, N)`` initial gains (copied, not modified). A problem whose gains are
    exhausted keeps producing (meaningless) items: the caller cuts at the first gain ``<= eps``.

    Example:
        >>> import numpy as np
        >>> kernel = np.array([[[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.5]]])
        >>> items, gains = greedy_arrays(kernel, True, None, np.array([[1.0, 1.0, 0.5]]), steps=2)
        >>> items[:, 0].tolist()  # item 0 first, then the diverse item 2 (not the near-copy 1)
        [0, 2]
    """
    batch, n, width = array.shape
    flat_source = array.reshape(batch * n, width)
    gains = np.array(gains, dtype=array.dtype)  # a private copy, updated in place
    flat_gains = gains.reshape(-1)
    flat_q = None if q is None else q.reshape(-1)
    q2 = None if q is None else q * q
    # Rows f_t of the Cholesky factor of the unweighted kernel K, one (B, N) block per step, so
    # that a step writes one contiguous block. With L = diag(q) K diag(q), Chen's rows are
    # e_t = q * f_t, and f_new = q_j (K_j - sum_t f_t[j] f_t) / sqrt(d_j), d -= q^2 f_new^2:
    # the weights touch two (B,) vectors and one (B, N) product per step, never a kernel row.
    rows_f = np.empty((max(steps - 1, 0), batch, n), dtype=array.dtype)
    flat_f = rows_f.reshape(rows_f.shape[0], batch * n)  # not -1: B * N may be 0
    base = np.arange(batch) * n
    items = np.empty((steps, batch), dtype=np.int64)
    bests = np.empty((steps, batch), dtype=array.dtype)
    tol = tie_tolerance(gains)
    rows = np.arange(batch)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for step in range(steps):
            top = gains.argmax(1)
            floor = gains[rows, top] - tol[rows, top] * (step + 1)  # (rounding grows per step)
            item = (gains + tol * (step + 1) >= floor[:, None]).argmax(1)  # the first tied
            flat = item + base
            best = flat_gains[flat]
            items[step] = item
            bests[step] = best
            if step == steps - 1:
                break
            if is_kernel:
                row = flat_source[flat]  # a copy: fancy indexing
            else:
                row = np.matmul(flat_source[flat][:, None, :], array.transpose(0, 2, 1))[:, 0]
            if step > 0:
                at_item = flat_f[:step, flat].T[:, None, :]  # (B, 1, step)
                row -= np.matmul(at_item, rows_f[:step].transpose(1, 0, 2))[:, 0]
            if q is None:
                row /= np.sqrt(best)[:, None]  # divided, as the plain algorithm writes it
            else:
                row *= (flat_q[flat] / np.sqrt(best))[:, None]
            rows_f[step] = row
            row *= row
            if q2 is not None:
                row *= q2
            gains -= row
            np.fmax(gains, -np.inf, out=gains)  # NaN (a NaN item's update) -> -inf: never taken
            flat_gains[flat] = -np.inf
    return items, bests

"""Chen's greedy DPP steps compiled with numba: the CPU engine when numba is installed.

The greedy is ``k`` sequential steps of small vector work. As NumPy calls (the fallback,
:func:`torchdoctor.ops._greedy_numpy.greedy_arrays`) each step costs about a dozen interpreter
round trips: for 8 problems of 196 items and ``k = 49`` the loop takes about 1.6 ms, compiled about
0.3 ms (``dpp_greedy`` as a whole: 2.5 vs 0.8 ms in BENCHMARKS.md's run). For
``select_tokens_per_segment`` the kernel weights, the starting gains and the chosen mask are
computed in the same compiled pass (:func:`select_from_gram`), so that little is left around
the similarity matmul. Each problem runs to its own ``k`` or to its first
gain ``<= eps`` and stops there.

numba is optional (``pip install "torchdoctor[fast]"``); this module imports it, and is itself
imported only on first use (:func:`torchdoctor.ops.dpp.compiled_engine`). The kernels are
compiled once per machine (about 10 s for every variant, cached on disk) and loaded once per
process (about 1 s, numba's import included). Without numba the NumPy engine runs: same
selection.

Example:
    >>> import numpy as np
    >>> kernel = np.array([[[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.5]]])
    >>> gains = np.diagonal(kernel, axis1=1, axis2=2).copy()
    >>> items, bests = greedy(kernel, True, None, gains, 2, np.array([2]), 1e-10)
    >>> items[:, 0].tolist()
    [0, 2]
"""

from __future__ import annotations

import logging

import numba
import numpy as np

from torchdoctor.ops._greedy_numpy import TIE_ULPS

__all__ = ["greedy", "select_from_gram"]

_log = logging.getLogger(__name__)


def _jit(function):
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError as error:  # no writable cache directory: compile in each process
        _log.debug("numba cache unavailable for %s (%s)", function.__name__, error)
        return numba.njit(nogil=True)(function)


@_jit
def _first_best(gains, tol, times):
    """The first index tied with the best gain at step ``times - 1`` (``tie_tolerance``)."""
    top = np.argmax(gains)  # (no NaN: a NaN update is kept at -inf below)
    floor = gains[top] - tol[top] * times
    for i in range(gains.shape[0]):
        if gains[i] + tol[i] * times >= floor:
            return i
    return top


@_jit
def _problem(source, b, is_kernel, q, has_q, gains, stop, eps, items, bests, rows, row, tol, tie):
    """Greedy steps of problem ``b`` (``gains`` ``(N,)``, updated in place), recording into
    column ``b`` of ``items``/``bests``; returns the number of steps taken (<= ``stop``).
    ``tol`` ``(N,)`` scratch for each item's tie tolerance, ``tie`` times its starting gain."""
    n = gains.shape[0]
    for i in range(n):
        tol[i] = gains[i] * tie if np.isfinite(gains[i]) and gains[i] > 0 else 0.0
    step = 0
    while step < stop:
        item = _first_best(gains, tol, step + 1)
        best = gains[item]
        items[step, b] = item
        bests[step, b] = best
        step += 1
        if not best > eps or step == stop:
            break
        if is_kernel:
            row[:] = source[b, item]
        else:
            row[:] = np.dot(source[b], source[b, item])
        for t in range(step - 1):  # row -= sum_t f_t[item] f_t (``rows`` and ``row`` apart)
            weight = rows[t, item]
            for i in range(n):
                row[i] -= weight * rows[t, i]
        # f_new = q_item (K_item - ...) / sqrt(d_item); the gains drop by q^2 f_new^2.
        if has_q:
            weight = q[b, item] / np.sqrt(best)
            for i in range(n):
                value = row[i] * weight
                rows[step - 1, i] = value
                gains[i] -= value * value * (q[b, i] * q[b, i])
                if np.isnan(gains[i]):  # a NaN item (NaN quality or row): never taken
                    gains[i] = -np.inf
        else:
            root = np.sqrt(best)  # divided, as the plain algorithm writes it
            for i in range(n):
                value = row[i] / root
                rows[step - 1, i] = value
                gains[i] -= value * value
                if np.isnan(gains[i]):
                    gains[i] = -np.inf
        gains[item] = -np.inf
    return step


@_jit
def _greedy_batch(source, is_kernel, q, has_q, gains0, limits, eps, items, bests, tie):
    batch, n, _ = source.shape
    steps = items.shape[0]
    rows = np.empty((max(steps - 1, 1), n), dtype=source.dtype)
    row = np.empty(n, dtype=source.dtype)
    gains = np.empty(n, dtype=source.dtype)
    tol = np.empty(n, dtype=source.dtype)
    for b in range(batch):
        gains[:] = gains0[b]
        stop = min(limits[b], steps)
        taken = _problem(
            source, b, is_kernel, q, has_q, gains, stop, eps, items, bests, rows, row, tol, tie
        )
        for rest in range(taken, steps):
            items[rest, b] = 0
            bests[rest, b] = np.nan


@_jit
def _select(gram, q, usable, wanted, eps, chosen, tie):
    segments, length, _ = gram.shape
    steps = max(wanted.max(), 1)
    items = np.empty((steps, segments), dtype=np.int64)
    bests = np.empty((steps, segments), dtype=gram.dtype)
    scale = np.empty((segments, length), dtype=gram.dtype)
    rows = np.empty((steps, length), dtype=gram.dtype)
    row = np.empty(length, dtype=gram.dtype)
    gains = np.empty(length, dtype=gram.dtype)
    tol = np.empty(length, dtype=gram.dtype)
    for s in range(segments):
        for i in range(length):
            norm = np.sqrt(gram[s, i, i])
            scale[s, i] = q[s, i] / max(norm, 1e-12)
            # Cosine self-similarity is exactly 1 (0 for a zero token): start from q^2.
            gains[i] = (q[s, i] * q[s, i] if norm > 0 else 0) if usable[s, i] else -np.inf
        taken = _problem(
            gram, s, True, scale, True, gains, wanted[s], eps, items, bests, rows, row, tol, tie
        )
        for t in range(taken):
            if bests[t, s] > eps:  # the last step taken may be the one that found <= eps
                chosen[s, items[t, s]] = True


def greedy(source, is_kernel, q, gains, steps, limits, eps):
    """Chen's greedy on host arrays: ``(items, bests)``, each ``(steps, B)``.

    ``source`` ``(B, N, N)`` kernel or ``(B, N, d)`` features, ``q`` ``(B, N)`` or ``None``,
    ``gains`` ``(B, N)`` initial gains (not modified), ``limits`` ``(B,)`` each problem's ``k``.
    A problem's slots after it stopped hold item 0 and gain NaN.
    """
    batch = source.shape[0]
    dtype = source.dtype
    has_q = q is not None
    q = np.ascontiguousarray(q, dtype=dtype) if has_q else np.empty((0, 0), dtype=dtype)
    items = np.empty((steps, batch), dtype=np.int64)
    bests = np.empty((steps, batch), dtype=dtype)
    _greedy_batch(
        np.ascontiguousarray(source),
        is_kernel,
        q,
        has_q,
        np.ascontiguousarray(gains, dtype=dtype),
        np.ascontiguousarray(np.broadcast_to(limits, (batch,)), dtype=np.int64),
        dtype.type(eps),
        items,
        bests,
        dtype.type(TIE_ULPS * np.finfo(dtype).eps),
    )
    return items, bests


def select_from_gram(gram, q, usable, wanted, eps):
    """The DPP choice of each segment from its raw Gram matrix: ``(S, L)`` bool.

    The kernel is ``diag(s) G diag(s)`` with ``s = q / |f|`` (cosine similarity weighted by
    quality), built row by row inside the greedy; ``q`` ``(S, L)`` (0 where not ``usable``),
    ``usable`` ``(S, L)`` bool, ``wanted`` ``(S,)`` tokens per segment. A segment stops early
    when its kernel is exhausted (gain ``<= eps``): fewer than ``wanted`` are chosen.
    """
    dtype = gram.dtype
    chosen = np.zeros(usable.shape, dtype=bool)
    _select(
        np.ascontiguousarray(gram),
        np.ascontiguousarray(q, dtype=dtype),
        np.ascontiguousarray(usable),
        np.ascontiguousarray(wanted, dtype=np.int64),
        dtype.type(eps),
        chosen,
        dtype.type(TIE_ULPS * np.finfo(dtype).eps),
    )
    return chosen

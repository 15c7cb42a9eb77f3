"""Greedy MAP inference for determinantal point processes, batched (Chen, Zhang & Zhou 2018).

"Fast Greedy MAP Inference for Determinantal Point Process to Improve Recommendation
Diversity" (NeurIPS 2018): each step adds the item with the largest marginal gain
``log det(L_{Y+i}) - log det(L_Y)``, read off an incrementally grown Cholesky factor: ``d_i^2``
(the squared residual of item ``i`` after projecting out the selected items) drops by
``e_i^2`` per step, where ``e`` is the new Cholesky row. ``O(N k^2)`` time and ``O(N k)``
memory per problem; every problem of a batch advances together, so there is one vector step per
selected item and no host sync. The steps are sequential and small, so on CPU tensors they run
on the tensors' memory as a compiled loop (numba, when installed) or as NumPy calls
(``backend="auto"``): for 8 / 64 problems of 196 items and k = 49, 9x / 4x (compiled) and
3x / 2.4x (NumPy) faster than as torch ops there (BENCHMARKS.md).

Seed 003 (FrameFusion / CDPruner-style video token pruning) ran this per frame with an
``.item()`` argmax per iteration; ``select_tokens_per_segment`` in ``ops.tokens`` batches it.

Example:
    >>> import torch
    >>> from torchdoctor.ops.dpp import dpp_greedy
    >>> kernel = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.5]])
    >>> dpp_greedy(kernel, k=2).indices.tolist()
    [0, 2]
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import NamedTuple

import torch

from torchdoctor.ops._flags import require_flag
from torchdoctor.ops._greedy_numpy import greedy_arrays, tie_tolerance
from torchdoctor.ops._host import cpu_array, numpy_ready
from torchdoctor.ops._validation import (
    require_count,
    require_eps,
    require_finite,
    require_float,
    require_rank,
    require_same_device,
    require_size,
    require_square,
    widen_integer,
)

__all__ = ["DppSelection", "dpp_greedy"]

_BACKENDS = ("auto", "torch", "numpy", "numba")


class DppSelection(NamedTuple):
    """``indices`` ``(..., K)`` int64 in selection order, ``-1`` after a problem stopped;
    ``log_det`` ``(...)``: log-determinant of the kernel restricted to the selected items.

    Example:
        >>> import torch
        >>> selection = dpp_greedy(torch.eye(3), k=2)
        >>> selection.indices.tolist(), round(float(selection.log_det), 6)
        ([0, 1], 0.0)
    """

    indices: torch.Tensor
    log_det: torch.Tensor


def _resolve_k(k, batch_shape, n, max_k, device, check) -> tuple[torch.Tensor, int]:
    if max_k is not None:
        max_k = require_count(max_k, "dpp_greedy: max_k", what="a non-negative int or None")
    if isinstance(k, torch.Tensor):
        if k.dtype.is_floating_point or k.dtype == torch.bool:
            raise TypeError(f"dpp_greedy: k must be an int or an integer tensor, got {k.dtype}")
        k = widen_integer(k)  # (uint32: torch takes no minimum of it)
        try:
            k_batch = k.to(device).expand(batch_shape)
        except RuntimeError:
            raise ValueError(
                f"dpp_greedy: k of shape {tuple(k.shape)} does not broadcast to the batch shape "
                f"{tuple(batch_shape)}; give one k per problem"
            ) from None
        if (max_k is None or check) and k.numel():
            low, high = torch.stack([k.min(), k.max()]).tolist()  # the one host read of k
            if low < 0:
                raise ValueError(f"dpp_greedy: k must be non-negative, got a k tensor holding {low}")
            max_k = high if max_k is None else max_k
        elif max_k is None:
            max_k = 0
    else:
        k = min(require_count(k, "dpp_greedy: k"), n)  # (an int beyond int64: clamped first)
        k_batch = torch.full(batch_shape, k, dtype=torch.long, device=device)
        max_k = k if max_k is None else max_k
    if max_k < 0:
        raise ValueError(f"dpp_greedy: k and max_k must be >= 0, got max_k={max_k}")
    # k > N is clamped: a problem stops when its items run out.
    return k_batch.reshape(-1), min(max_k, n)


def _require_fits_batch(extra, extra_name, batch_shape, name, source) -> None:
    """Raise ValueError unless ``extra`` ``(..., N)`` expands to ``batch_shape + (N,)``."""
    own = tuple(extra.shape[:-1])
    fits = len(own) <= len(batch_shape) and all(
        size in (1, want) for size, want in zip(own[::-1], batch_shape[::-1])
    )
    if not fits:
        expected = (*batch_shape, extra.shape[-1])
        raise ValueError(
            f"dpp_greedy: {extra_name} of shape {tuple(extra.shape)} does not fit the batch "
            f"shape {batch_shape} of {name} (shape {tuple(source.shape)}); expected {expected} "
            "(leading dims may be missing or of size 1)"
        )


def _greedy_torch(source, is_kernel, q, gains, steps):
    """Chen's greedy steps as tensor ops, every problem at once: ``(items, best gains)``, each
    ``(steps, B)``. Rows are gathered through flat indices (one ``index_select`` each)."""
    batch, n, width = source.shape
    device, dtype = source.device, source.dtype
    # Each step's item and gain are kept in lists, stacked once at the end: writing them with
    # out= into rows of (steps, B) tensors (and flags) broke torch.compile with dynamic shapes
    # ("Cannot call numel() on tensor with symbolic sizes", oracle round 8).
    items, bests = [], []
    columns = max(steps - 1, 0)
    rows_e = torch.zeros(batch, n, columns, dtype=dtype, device=device)  # e by column
    flat_e = rows_e.view(batch * n, columns)
    flat_source = source.reshape(batch * n, width)
    flat_gains = gains.view(-1)
    base = torch.arange(0, batch * n, n, device=device)
    flat_q = None if q is None else q.reshape(-1)
    tol = tie_tolerance(gains)
    for step in range(steps):
        best, top = gains.max(dim=-1, keepdim=True)  # ties: rounding grows with the steps
        floor = best.sub_(tol.gather(1, top), alpha=step + 1)
        tied = torch.add(gains, tol, alpha=step + 1) >= floor
        item = tied.max(dim=-1).indices  # the first tied with the best
        items.append(item)
        bests.append(gains.gather(1, item.unsqueeze(1)).squeeze(1))
        if step == steps - 1:
            break
        flat = item + base
        picked = flat_source.index_select(0, flat)  # (B, width)
        if is_kernel:
            row = picked
        else:
            row = torch.bmm(picked.unsqueeze(1), source.transpose(1, 2)).squeeze(1)
        if q is not None:
            row = row * (q * flat_q.index_select(0, flat).unsqueeze(1))
        if step > 0:
            at_item = flat_e.index_select(0, flat)[:, :step].unsqueeze(1)  # (B, 1, step)
            previous = rows_e[:, :, :step].transpose(1, 2)  # (B, step, N)
            row = torch.baddbmm(row.unsqueeze(1), at_item, previous, alpha=-1).squeeze(1)
        # best > eps >= 0 for a live problem; a stopped one may turn NaN, which is harmless
        # (NaN > eps is False, and the stop is cumulative).
        e = row.mul_(bests[-1].rsqrt().unsqueeze(1))  # row is a fresh tensor on every path
        rows_e[:, :, step] = e
        gains.addcmul_(e, e, value=-1)
        # A NaN item (NaN quality, a NaN row masked out) gets a NaN update (-inf - NaN): keep
        # it at -inf, or max would pick it and stop the problem. Its NaN stays in its own column.
        gains.nan_to_num_(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        flat_gains.index_fill_(0, flat, -math.inf)
    return torch.stack(items), torch.stack(bests)


@functools.cache
def compiled_engine() -> ModuleType | None:
    """The numba-compiled CPU engine (module ``ops._greedy_jit``), or ``None`` without numba.

    Imported on first use, so ``import torchdoctor`` never pays for numba.

    Example:
        >>> (compiled_engine() is not None) == numba_available()
        True
    """
    try:
        from torchdoctor.ops import _greedy_jit
    except ImportError:
        return None
    return _greedy_jit


def numba_available() -> bool:
    """True when the compiled CPU engine (``backend="numba"``) can run: numba is installed.

    Example:
        >>> isinstance(numba_available(), bool)
        True
    """
    return compiled_engine() is not None


def host_engine(backend: str, tensor: torch.Tensor) -> str:
    """The engine ``backend`` means for ``tensor``: ``"numba"``, ``"numpy"`` or ``"torch"``.

    ``"auto"`` picks the compiled engine for float32/float64 CPU tensors when numba is
    installed, NumPy for them otherwise, torch ops for everything else. An explicit host engine
    on a tensor it cannot read, or ``"numba"`` without numba, is an error naming the fix.

    Example:
        >>> import torch
        >>> host_engine("auto", torch.ones(2, dtype=torch.float16)), host_engine("numpy", torch.ones(2))
        ('torch', 'numpy')
    """
    ready = numpy_ready(tensor)
    if backend == "auto":
        if not ready:
            return "torch"
        return "numba" if compiled_engine() is not None else "numpy"
    if backend in ("numpy", "numba") and not ready:
        raise ValueError(
            f"backend={backend!r} needs a float32 or float64 CPU tensor, got {tensor.dtype} "
            f"on {tensor.device}; use backend='torch' (or 'auto')"
        )
    if backend == "numba" and compiled_engine() is None:
        raise ValueError(
            "backend='numba' needs numba: pip install 'torchdoctor[fast]' (or numba), or use "
            "backend='auto', which falls back to the NumPy engine"
        )
    return backend


def _greedy_host(source, is_kernel, q, gains, steps, k_flat, eps, engine):
    """The greedy steps on zero-copy host views of CPU tensors, compiled (``engine="numba"``)
    or as NumPy calls: ``(items, bests)``, each ``(steps, B)``, as tensors."""
    array, gains_array = cpu_array(source), cpu_array(gains)
    q_array = None if q is None else cpu_array(q)
    if engine == "numba":
        run = compiled_engine().greedy
        items, bests = run(array, is_kernel, q_array, gains_array, steps, cpu_array(k_flat), eps)
    else:
        items, bests = greedy_arrays(array, is_kernel, q_array, gains_array, steps)
    return torch.from_numpy(items), torch.from_numpy(bests)


def greedy_steps(
    source: torch.Tensor,
    is_kernel: bool,
    q: torch.Tensor | None,
    gains: torch.Tensor,
    k_flat: torch.Tensor,
    steps: int,
    eps: float,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The greedy loop of :func:`dpp_greedy` on validated, flattened inputs (no checks).

    ``source`` ``(B, N, N)`` kernel or ``(B, N, d)`` features, ``q`` ``(B, N)`` or ``None``,
    ``gains`` ``(B, N)`` the initial gains ``q_i^2 K_ii`` (``-inf`` for masked items;
    may be modified in place), ``k_flat`` ``(B,)``. Only the kernel's off-diagonal entries are read after the
    start, so a caller may pass exact diagonal gains for a kernel whose stored diagonal carries
    rounding (``ops.tokens`` does, for cosine kernels). Returns ``(indices (B, steps),
    log_det (B,))``.

    Example:
        >>> import torch
        >>> kernel = torch.tensor([[[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.5]]])
        >>> gains = kernel.diagonal(dim1=-2, dim2=-1).clone()
        >>> indices, log_det = greedy_steps(kernel, True, None, gains, torch.tensor([2]), 2, 1e-9)
        >>> indices.tolist()
        [[0, 2]]
    """
    batch = source.shape[0]
    device, dtype = source.device, source.dtype
    if steps == 0:
        empty = torch.empty(batch, 0, dtype=torch.long, device=device)
        return empty, torch.zeros(batch, dtype=dtype, device=device)
    engine = host_engine(backend, source)
    gains = gains.to(dtype)  # the quality may come in another float dtype (bfloat16, ...)
    q = None if q is None else q.to(dtype)
    if engine == "torch":
        items, bests = _greedy_torch(source, is_kernel, q, gains, steps)  # (steps, B) each
    else:
        items, bests = _greedy_host(source, is_kernel, q, gains, steps, k_flat, eps, engine)
    # A problem stops at its first gain <= eps (or NaN) or when its own k is reached.
    allowed = k_flat.unsqueeze(0) > torch.arange(steps, device=device).unsqueeze(1)
    ok = ((bests > eps) & allowed).to(torch.uint8).cumprod(0).bool().T  # (B, steps)
    indices = torch.where(ok, items.T, -1)
    tiny = torch.finfo(dtype).tiny
    log_det = torch.where(ok, bests.T.clamp(min=tiny).log(), 0.0).sum(-1)
    return indices, log_det


def dpp_greedy(
    kernel: torch.Tensor | None = None,
    *,
    features: torch.Tensor | None = None,
    quality: torch.Tensor | None = None,
    k: int | torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-10,
    max_k: int | None = None,
    check: bool = False,
    backend: str = "auto",
) -> DppSelection:
    """Greedy DPP MAP selection of up to ``k`` items per problem, batched over leading dims.

    The kernel is ``L = diag(q) K diag(q)`` with ``K`` either ``kernel`` ``(..., N, N)`` or
    ``features @ features.mT`` for ``features`` ``(..., N, d)`` (never materialized: each step
    computes the one kernel row it needs, ``O(N d)``), and ``q = quality`` ``(..., N)`` (all
    ones if ``None``): the conditional, relevance-weighted kernel of CDPruner.

    Args:
        k: items per problem, an int or an integer tensor broadcastable to the batch shape. ``k``
            larger than the number of selectable items is clamped (the problem stops when its
            items run out); ``k = 0`` selects nothing.
        mask: ``(..., N)`` bool, False for items that may not be selected (e.g. padding).
            An item that is masked out, or whose quality or diagonal is NaN, is never selected
            and has no effect on the others, even when its row holds NaN (``check=False``).
        eps: a problem stops when the best remaining gain ``d_i^2`` is ``<= eps``: this is how a
            rank-deficient or non-PSD kernel ends (no error is raised). The default suits
            float64; in float32 an exhausted kernel leaves rounding residue of about
            ``1e-7 * max(diag)``, so pass e.g. ``eps=1e-6 * max(diag)`` there. Finite, >= 0.
        max_k: the output width when ``k`` is a tensor; if ``None`` it is ``k.max()`` (one host
            read, which also rejects negative values like a negative int ``k``). An int ``k``
            costs no sync.
        check: validate that the inputs are finite (one host sync; one more for the values of
            a ``k`` tensor given with ``max_k``).
        backend: how the ``k`` sequential greedy steps are run. ``"torch"``: about ten tensor
            ops per step on any device, no host sync (the accelerator path). ``"numba"``: the
            steps compiled (numba, an optional dependency: ``pip install "torchdoctor[fast]"``)
            on zero-copy views of CPU memory, each problem stopping at its own ``k`` or ``eps``
            (measured 3.1x / 1.7x faster than ``"numpy"`` for 8 / 64 problems of 196 items,
            k = 49; the first call in a process loads the compiled code, about 1 s, the first
            on a machine compiles it, about 10 s, cached on disk). ``"numpy"``: the same steps
            as NumPy calls on those views, where an op costs 1-3 us instead of torch's 5-10 us
            (3x / 2.4x faster than ``"torch"`` there). Both host engines need float32/float64
            CPU tensors. ``"auto"`` (default): numba, else numpy, for such tensors; torch
            otherwise. All give the same selection.

    Ties: a gain within rounding of the best (at step ``t``, ``4 (t + 1) eps`` of each one's
    starting gain, ``eps`` of the compute dtype) counts as equal to it and the lowest index
    among them is taken, on every backend (gains equal in exact arithmetic, of duplicate or
    symmetric items, land a few ulps apart, differently on each engine). The selection is
    discrete, so the inputs are detached: ``log_det`` carries no gradient.

    Returns:
        :class:`DppSelection` with ``indices`` ``(..., min(max_k, N))`` in selection order;
        ``log_det`` in the input's dtype. Half precision (float16/bfloat16) is computed in
        float32 (``q^2 K_ii`` of 300 overflows float16; bfloat16 gains would keep 3 digits).

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> quality = torch.tensor([1.0, 2.0, 1.0])
        >>> dpp_greedy(features=features, quality=quality, k=3, eps=1e-6).indices  # rank 2
        tensor([ 1,  2, -1])
    """
    if (kernel is None) == (features is None):
        raise ValueError(
            "dpp_greedy: give exactly one of kernel= (..., N, N) or features= (..., N, d)"
        )
    source = kernel if kernel is not None else features
    name = "kernel" if kernel is not None else "features"
    require_float(source, name)
    if kernel is not None:
        require_square(kernel, "kernel")
    else:
        require_rank(features, "features", 2, layout="(..., N, d)")
    *batch_shape, n, width = source.shape
    batch_shape = tuple(batch_shape)
    for extra_name, extra in (("quality", quality), ("mask", mask)):
        if extra is not None:
            require_same_device(**{name: source, extra_name: extra})
            require_rank(extra, extra_name, 1, layout="(..., N)")
            require_size(extra, extra_name, -1, n, f"the number of items N of {name}")
            _require_fits_batch(extra, extra_name, batch_shape, name, source)
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(
            f"dpp_greedy: mask must be a bool tensor, got {mask.dtype}; use mask.bool()"
        )
    if backend not in _BACKENDS:
        raise ValueError(f"dpp_greedy: backend must be one of {_BACKENDS}, got {backend!r}")
    eps = require_eps(eps, "dpp_greedy: eps")
    check = require_flag(check, "dpp_greedy: check")
    if check:
        require_finite(**{name: source, "quality": quality})
    device, dtype = source.device, source.dtype
    host_engine(backend, source)  # an impossible engine fails here, before any work
    k_flat, steps = _resolve_k(k, batch_shape, n, max_k, device, check)
    batch = math.prod(batch_shape)
    wide = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype  # (see Returns)
    source = source.detach().reshape(batch, n, width).to(wide)  # a discrete choice: no autograd
    if quality is not None:
        quality = quality.detach().to(wide).expand(*batch_shape, n).reshape(batch, n)
    q = quality

    if kernel is not None:
        gains = torch.diagonal(source, dim1=-2, dim2=-1).clone()
    else:
        gains = (source * source).sum(-1)
    if q is not None:
        gains = gains * q * q
    if mask is not None:
        gains = gains.masked_fill(~mask.expand(*batch_shape, n).reshape(batch, n), -math.inf)
    gains = torch.nan_to_num(gains, nan=-math.inf)

    is_kernel = kernel is not None
    indices, log_det = greedy_steps(source, is_kernel, q, gains, k_flat, steps, eps, backend)
    return DppSelection(indices.reshape(*batch_shape, steps), log_det.to(dtype).view(batch_shape))

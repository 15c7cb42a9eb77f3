"""Whitened Mahalanobis distances: one Cholesky per covariance, never an explicit inverse.

Seed 000 solved one linear system per (anchor, negative) pair. With ``cov = L L^T``, the
Mahalanobis distance is the Euclidean distance after whitening, ``y = L^{-1} z``, so every
candidate is whitened once with one batched triangular solve and all distances follow in one
vectorized call. Triangular solves are also more accurate than multiplying by an explicit
inverse (error grows with ``sqrt(cond)`` instead of ``cond``).

Example:
    >>> import torch
    >>> cov = torch.diag(torch.tensor([4.0, 1.0]))
    >>> x, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    >>> pairwise_mahalanobis(x, y, cov=cov).tolist()
    [[1.0]]
"""

from __future__ import annotations

import contextlib

import torch

from torchdoctor.ops._flags import require_flag
from torchdoctor.ops._validation import (
    raise_not_spd,
    require_broadcastable,
    require_count,
    require_data,
    require_finite,
    require_float,
    require_rank,
    require_real,
    require_same_device,
    require_same_dtype,
    require_size,
    require_square,
)

__all__ = ["cholesky_factor", "whiten", "pairwise_mahalanobis", "mahalanobis_to_candidates"]

_HALF = (torch.float16, torch.bfloat16)


def _wide(t: torch.Tensor | None) -> torch.Tensor | None:
    """Half precision is computed in float32 (no half Cholesky/triangular solve on CPU)."""
    return t.float() if t is not None and t.dtype in _HALF else t


def cholesky_factor(
    cov: torch.Tensor, jitter: float = 1e-5, max_tries: int = 2, check: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched lower Cholesky factor with jitter added only to the matrices that need it.

    Each matrix is first factored as is (``torch.linalg.cholesky_ex``, no error raised). A
    matrix that fails gets ``jitter * mean(|diag|) * 10**k`` added to its diagonal for
    ``k = 0 .. max_tries-1`` until it factors; the others are untouched. The absolute values
    keep the step positive and sized like the matrix even when rounding (or a matrix that is
    no covariance) leaves negative diagonal entries; for a covariance they change nothing.

    Args:
        cov: ``(..., d, d)`` symmetric matrices (only the lower triangle is read).
        jitter: relative size of the first jitter step (scaled by each matrix's mean absolute
            diagonal).
        max_tries: number of jitter steps; the largest is the jitter budget.
        check: ``True`` (default) checks for NaN/Inf and raises ValueError for a matrix that
            is not SPD even with the largest jitter; the error names the batch index and the
            smallest eigenvalue (when that is positive, it says the matrix is too
            ill-conditioned to factor in its dtype, with its condition number). This costs one host sync for the whole batch (two on the rare
            jitter path), and the jitter levels are only factored when a matrix needs them.
            ``False`` is the hot path: no host sync at all; since it cannot know whether any
            matrix failed, it always factors all ``max_tries`` jitter levels in one extra
            batched call (pass ``max_tries=0`` when the covariances are SPD by construction,
            e.g. with shrinkage). A matrix that still fails has a NaN factor and a NaN jitter.

    Returns:
        ``(chol, added_jitter)``: ``chol`` ``(..., d, d)`` lower triangular in ``cov``'s dtype;
        ``added_jitter`` ``(...)``: the absolute amount added to each diagonal (0 where none
        was needed, NaN where the budget was not enough and ``check=False``), in the dtype
        the factor was computed in: ``cov``'s, float32 for float16/bfloat16 (a jitter of
        1e-8 would read 0 in float16).

        Differentiable in ``cov``. On the jitter path the gradient is that of the jittered
        matrix ``cov + added_jitter * I``: the jitter amount (a function of ``cov``'s diagonal)
        is a constant, not differentiated, so a diagonal entry's gradient differs from the
        derivative of the returned factor there. ``added_jitter`` carries no gradient.

    Example:
        >>> cov = torch.stack([torch.eye(2), torch.ones(2, 2)])  # the second has rank 1
        >>> chol, added = cholesky_factor(cov)
        >>> [a > 0 for a in added.tolist()]  # jitter went to the second matrix only
        [False, True]
    """
    require_float(cov, "cov")
    check = require_flag(check, "check")
    chol, added = _factor(_wide(cov), jitter, max_tries, check, {}, cov.dtype)
    return chol.to(cov.dtype), added  # (float32 for half: its jitter could round to 0)


def _factor(
    cov: torch.Tensor,
    jitter: float,
    max_tries: int,
    check: bool,
    also_finite: dict[str, torch.Tensor],
    made_in: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cholesky_factor; with ``check`` the finite checks of ``also_finite`` share its sync.
    ``made_in``: the caller's dtype, named by errors about a widened (half) input."""
    require_float(cov, "cov")
    require_square(cov, "cov")
    max_tries = require_count(max_tries, "max_tries")
    require_real(jitter, "jitter")
    if not jitter >= 0:
        raise ValueError(f"jitter must be >= 0, got {jitter!r}")
    # With autograd, the jitter ladder only decides how much to add; one clean factorization
    # of cov + added * I is differentiated: the failed attempts behind the ladder's torch.where
    # (a zero or NaN pivot) would send NaN into backward. No gradient flows through the amount
    # (detached: documented in cholesky_factor and pairwise_mahalanobis).
    needs_grad = cov.requires_grad and torch.is_grad_enabled()
    refactor = needs_grad and max_tries > 0
    with torch.no_grad() if refactor and not check else contextlib.nullcontext():
        chol, info = torch.linalg.cholesky_ex(cov)
    failed = info != 0
    if check:
        tensors = {**also_finite, "cov": cov}
        require_data(**tensors)
        flags = [failed.any(), failed.any() & False]
        flags += [(~torch.isfinite(t)).any() for t in tensors.values() if t.numel() > 0]
        failed_flag, nonfinite_flag = torch.stack([flags[0], torch.stack(flags[1:]).any()]).tolist()
        if nonfinite_flag:
            require_finite(made_in, **tensors)
        if not failed_flag:
            return chol, torch.zeros(cov.shape[:-2], dtype=cov.dtype, device=cov.device)
    with torch.no_grad() if refactor else contextlib.nullcontext():
        chol, added, failed = _jitter_ladder(cov, chol, failed, jitter, max_tries)
    if check and bool(failed.any()):  # only reached on the rare jitter path
        _raise_not_spd(cov, failed, jitter, max_tries)
    if refactor:
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        chol = torch.linalg.cholesky_ex(cov + added.detach()[..., None, None] * eye).L
    if check:
        return chol, added
    nan = torch.full_like(added, float("nan"))
    added = torch.where(failed, nan, added)
    chol = torch.where(failed[..., None, None], nan[..., None, None], chol)
    return chol, added


def _jitter_ladder(
    cov: torch.Tensor, chol: torch.Tensor, failed: torch.Tensor, jitter: float, max_tries: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Factor every jitter level in one batched call; keep the smallest that works per matrix."""
    added = torch.zeros(cov.shape[:-2], dtype=cov.dtype, device=cov.device)
    if max_tries == 0:
        return chol, added, failed
    scale = _jitter_scale(cov)
    powers = 10.0 ** torch.arange(max_tries, dtype=cov.dtype, device=cov.device)
    levels = jitter * powers.view(-1, *([1] * scale.ndim)) * scale  # (tries, ...)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    retry, info = torch.linalg.cholesky_ex(cov + levels[..., None, None] * eye)
    works = info == 0
    picked, amount = retry[-1], levels[-1]
    for k in range(max_tries - 2, -1, -1):  # the smallest level that factors wins
        picked = torch.where(works[k, ..., None, None], retry[k], picked)
        amount = torch.where(works[k], levels[k], amount)
    works &= scale > 0  # a zero diagonal is no covariance: no relative jitter rescues it
    use = failed & works.any(0)
    chol = torch.where(use[..., None, None], picked, chol)
    added = torch.where(use, amount, added)
    return chol, added, failed & ~works.any(0)


def _jitter_scale(cov: torch.Tensor) -> torch.Tensor:
    """Each matrix's mean absolute diagonal: the unit of its jitter (0 for a zero diagonal)."""
    return cov.diagonal(dim1=-2, dim2=-1).abs().mean(-1)


def _raise_not_spd(cov: torch.Tensor, failed: torch.Tensor, jitter: float, tries: int) -> None:
    index = tuple(int(i) for i in failed.nonzero()[0].tolist()) if failed.ndim else ()
    scale = float(_jitter_scale(cov.detach())[index])
    tried = (
        f"adding jitter up to {jitter * 10.0 ** (tries - 1) * scale:.3e} to the diagonal"
        if tries > 0 and scale > 0
        else "any jitter (max_tries=0)"
        if scale > 0
        else "any jitter: its diagonal is zero, so relative jitter has no scale"
    )
    raise_not_spd(
        "cov",
        cov,
        failed,
        f"still not factorable without {tried}; regularize it (e.g. covariance(x, "
        "shrinkage=0.1)) or raise jitter/max_tries",
        f"or raise jitter/max_tries (it was factored without {tried})",
    )


def _check_points(x: torch.Tensor, name: str) -> None:
    require_float(x, name)
    require_rank(x, name, 2, layout="(..., n, d)")


def _check_chol(chol: torch.Tensor, d: int, x_name: str) -> None:
    require_float(chol, "chol")
    require_square(chol, "chol")
    require_size(chol, "chol", -1, d, f"the feature size d of {x_name}")


def whiten(x: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """Whiten row vectors: ``y = L^{-1} x`` for each of the ``n`` rows, one triangular solve.

    After whitening, Euclidean distance equals Mahalanobis distance under ``cov = L L^T``.

    Args:
        x: ``(..., n, d)`` points.
        chol: ``(..., d, d)`` lower Cholesky factors (e.g. from ``cholesky_factor``); leading
            dims broadcast with ``x``'s.

    Returns:
        ``(..., n, d)`` whitened points, in ``x``'s dtype. Differentiable in both inputs.

    Example:
        >>> chol = torch.diag(torch.tensor([2.0, 1.0]))
        >>> whiten(torch.tensor([[4.0, 3.0]]), chol).tolist()
        [[2.0, 3.0]]
    """
    _check_points(x, "x")
    _check_chol(chol, x.shape[-1], "x")
    require_same_device(x=x, chol=chol)
    require_same_dtype(x=x, chol=chol)
    require_broadcastable("x", x.shape[:-2], "chol", chol.shape[:-2])
    return torch.linalg.solve_triangular(_wide(chol), _wide(x).mT, upper=False).mT.to(x.dtype)


def _resolve_chol(
    cov: torch.Tensor | None,
    chol: torch.Tensor | None,
    check: bool,
    also_finite: dict[str, torch.Tensor],
    made_in: torch.dtype | None = None,
) -> torch.Tensor:
    if (cov is None) == (chol is None):
        raise ValueError(
            "give exactly one of cov= (covariance matrices) or chol= (their Cholesky factors "
            "from cholesky_factor); pass chol= to reuse one factorization"
        )
    if chol is None:
        assert cov is not None
        chol, _ = _factor(cov, 1e-5, 2, check, also_finite, made_in)
    elif check:
        require_finite(made_in, **also_finite, chol=chol)
    return chol


def pairwise_mahalanobis(
    x: torch.Tensor,
    y: torch.Tensor,
    cov: torch.Tensor | None = None,
    chol: torch.Tensor | None = None,
    check: bool = True,
) -> torch.Tensor:
    """All Mahalanobis distances between two point sets, one covariance per batch element.

    ``x`` and ``y`` are whitened once each (``n + m`` solves, not ``n * m``), then compared
    with Euclidean distances. This is seed 000's per-image ``Σplus`` distance for every
    (anchor, candidate) pair at once.

    Args:
        x: ``(..., n, d)``; y: ``(..., m, d)``; leading dims broadcast with each other and
            with ``cov``/``chol``.
        cov: ``(..., d, d)`` SPD covariances, factored with ``cholesky_factor(check=check)``;
            or
        chol: ``(..., d, d)`` lower Cholesky factors (reuse one factorization across calls).
        check: validate the inputs, one host sync: with ``cov``, ``cholesky_factor``'s
            checks (SPD, NaN/Inf) together with NaN/Inf in ``x`` and ``y``; with ``chol``,
            NaN/Inf in ``x``, ``y`` and ``chol``. ``False`` on a hot path: no host sync
            (pass ``chol`` too, to reuse one factorization across calls).

    Returns:
        ``(..., n, m)`` distances in ``x``'s dtype; differentiable, with a finite gradient
        where two points coincide. With ``cov`` that needs jitter (see ``cholesky_factor``),
        the gradient is that of the jittered matrix: the jitter amount is not differentiated. ``x`` and ``y`` are whitened by separate triangular solves,
        whose rounding can differ for equal points: a point of ``y`` equal to one of ``x``
        may get a distance of about ``eps * |L^-1 x|`` instead of exactly 0 (a gradient of
        norm at most ``|L^-1|`` in an arbitrary direction, not 0); ``mahalanobis_to_candidates``
        whitens the differences, so equal points give exactly 0 with a zero gradient there.
        Like ``torch.cdist``, the distances square the whitened coordinates: in float32 those
        of about ``1e19`` or more overflow (``inf``) and of ``1e-19`` or less underflow (0);
        rescale such inputs first (distances scale with them). Second derivatives (double
        backward, e.g. a gradient penalty through ``create_graph=True``) follow
        ``torch.cdist``, which computes the distances: supported from torch 2.14; before it
        they are not supported (torch raises "the derivative for '_cdist_backward' is not
        implemented"), and
        ``mahalanobis_to_candidates(x, y.unsqueeze(-3), chol.unsqueeze(-3))`` gives the same
        distances through ``(..., n, m, d)`` differences, twice differentiable on any torch.

    Example:
        >>> x = torch.randn(8, 4, 16, dtype=torch.float64)   # 8 images, 4 parts, d = 16
        >>> pool = torch.randn(8, 28, 16, dtype=torch.float64)
        >>> cov = torch.eye(16, dtype=torch.float64).expand(8, 16, 16)
        >>> pairwise_mahalanobis(x, pool, cov=cov).shape
        torch.Size([8, 4, 28])
    """
    _check_points(x, "x")
    _check_points(y, "y")
    check = require_flag(check, "check")
    require_size(y, "y", -1, x.shape[-1], "the feature size d of x")
    require_same_device(x=x, y=y, cov=cov, chol=chol)
    require_same_dtype(x=x, y=y, cov=cov, chol=chol)
    if cov is not None:
        require_square(cov, "cov")
        require_size(cov, "cov", -1, x.shape[-1], "the feature size d of x")
    points = require_broadcastable("x", x.shape[:-2], "y", y.shape[:-2])
    for name, matrices in (("cov", cov), ("chol", chol)):  # the one given, before factoring
        if matrices is not None:
            require_broadcastable("x and y", points, name, matrices.shape[:-2])
    if chol is not None:  # (before widening: its errors name the caller's dtype)
        _check_chol(chol, x.shape[-1], "x")
    dtype = x.dtype
    x, y, cov, chol = _wide(x), _wide(y), _wide(cov), _wide(chol)
    factor = _resolve_chol(cov, chol, check, {"x": x, "y": y}, dtype)
    _check_chol(factor, x.shape[-1], "x")
    wx = whiten(x, factor)
    wy = whiten(y, factor)
    batch = torch.broadcast_shapes(wx.shape[:-2], wy.shape[:-2])
    wx = wx.expand(*batch, *wx.shape[-2:])
    wy = wy.expand(*batch, *wy.shape[-2:])
    # Direct differences (not the |a|^2 + |b|^2 - 2ab expansion) keep full accuracy for close
    # points; cdist's backward returns 0 where a distance is 0.
    return torch.cdist(wx, wy, compute_mode="donot_use_mm_for_euclid_dist").to(dtype)


def mahalanobis_to_candidates(
    anchor: torch.Tensor, candidates: torch.Tensor, chol: torch.Tensor, check: bool = True
) -> torch.Tensor:
    """Mahalanobis distance from each anchor to its own candidate set.

    For per-anchor candidate sets (e.g. the top-M negatives of ``two_stage_negatives``) the
    differences ``c - a`` are whitened directly, which is as cheap as whitening the candidates
    and avoids cancellation.

    Args:
        anchor: ``(..., d)``.
        candidates: ``(..., m, d)``.
        chol: ``(..., d, d)`` lower Cholesky factors; all leading dims broadcast.
        check: check inputs for NaN/Inf (one host sync); ``False`` on a hot path.

    Returns:
        ``(..., m)`` distances; differentiable, zero gradient where a candidate equals its
        anchor.

    Example:
        >>> chol = torch.diag(torch.tensor([2.0, 1.0]))
        >>> mahalanobis_to_candidates(torch.zeros(2), torch.tensor([[2.0, 0.0], [0.0, 3.0]]), chol)
        tensor([1., 3.])
    """
    require_float(anchor, "anchor")
    check = require_flag(check, "check")
    require_rank(anchor, "anchor", 1, layout="(..., d)")
    _check_points(candidates, "candidates")
    d = anchor.shape[-1]
    require_size(candidates, "candidates", -1, d, "the feature size d of anchor")
    _check_chol(chol, d, "anchor")
    require_same_device(anchor=anchor, candidates=candidates, chol=chol)
    require_same_dtype(anchor=anchor, candidates=candidates, chol=chol)
    batch = require_broadcastable(
        "anchor", anchor.shape[:-1], "candidates", candidates.shape[:-2]
    )
    require_broadcastable("anchor and candidates", batch, "chol", chol.shape[:-2])
    if check:
        require_finite(anchor=anchor, candidates=candidates, chol=chol)
    dtype = anchor.dtype
    diff = whiten(_wide(candidates) - _wide(anchor).unsqueeze(-2), _wide(chol))
    return _safe_norm(diff).to(dtype)


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dim with gradient 0 (a subgradient) at the origin; NaN
    stays NaN."""
    squared = v.pow(2).sum(-1)
    zero = squared == 0
    return torch.where(zero, 0, torch.where(zero, 1, squared).sqrt())

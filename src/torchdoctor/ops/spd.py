"""Distances between SPD matrices (pyRiemann's definitions), batched and safely differentiable.

=====================  ===================================================  ====================
metric                 definition (pyRiemann name)                          cost
=====================  ===================================================  ====================
``fro``                ``||A - B||_F``  (distance_euclid)                   one subtraction
``log_euclidean``      ``||logm(A) - logm(B)||_F``  (distance_logeuclid)    two eigh
``stein``              ``sqrt(logdet((A+B)/2) - logdet(AB)/2)``             two Cholesky +
                       (distance_logdet)                                    svdvals
``affine_invariant``   ``sqrt(sum log^2 eig(A^-1 B))``  (distance_riemann)  two Cholesky +
                                                                            svdvals
=====================  ===================================================  ====================

Seed 000 recommends ``fro`` for its SoC loss: the others need a decomposition per matrix.

Finite gradients, including at ``A == B``:

- Every distance is ``sqrt(f)`` with ``f >= 0`` and ``f = 0`` at ``A == B``, where the
  derivative ``f' / (2 sqrt f)`` is ``0/0``. ``sqrt`` is applied through a double ``where``
  that returns 0 with gradient 0 where ``f <= 0`` (a valid subgradient of the distance there);
  a NaN ``f`` stays NaN.
- ``logm`` differentiated through ``torch.linalg.eigh`` divides by ``lambda_i - lambda_j``,
  which is infinite for repeated eigenvalues (e.g. any multiple of the identity). The matrix
  log here has its own backward, the Daleckii-Krein formula ``U (F o (U^T G U)) U^T`` with
  ``F_ij = (log l_i - log l_j) / (l_i - l_j)`` computed as ``log1p(x) / (x l_j)``,
  ``x = l_i / l_j - 1`` (accurate for close eigenvalues) and ``1 / l_j`` when they are equal.
- ``affine_invariant`` and ``stein`` use ``eig(A^-1 B) = sigma(L_A^-1 L_B)^2`` with
  ``A = L_A L_A^T``: singular values only (``svdvals``), whose gradient ``U diag(g) V^T`` is
  well defined for repeated values. ``stein`` is ``sqrt(sum log cosh(log sigma_i))`` (equal to
  the log-determinant form, since ``(1 + l) / (2 sqrt l) = cosh(log sqrt l)``), with
  ``log cosh(u) = log1p(2 sinh^2(u / 2))`` near 0: the log-determinant difference cancels
  ``O(1)`` terms down to an ``O(|A - B|^2)`` result, and gave 0 in float32 for ``B = A`` times
  ``1 + 1e-4`` (a relative error of about ``eps / |A - B|^2``; now about ``eps / |A - B|``, as
  for ``affine_invariant``).
- At ``A == B`` the distance is exactly 0 with a zero gradient for ``fro``, ``log_euclidean``
  and ``stein``. For ``affine_invariant`` rounding in ``L_A^-1 L_B`` leaves a distance of
  about ``1e-15`` (float64); its gradient there is finite and bounded by the metric's
  Lipschitz constant, in an arbitrary direction (a valid subgradient), not exactly 0.
- Second derivatives (double backward, e.g. a gradient penalty) go through
  ``torch.linalg.eigh`` / ``svdvals`` / ``cholesky``: exact where the eigenvalues (of ``A`` and
  ``B`` for ``log_euclidean``, of ``A^-1 B`` for ``stein`` and ``affine_invariant``) are
  distinct, NaN where they repeat (e.g. ``B = c A``; at ``A == B`` they are 0 for ``stein``),
  and only as accurate as ``1 / (lambda_i - lambda_j)`` allows near that.

Precision and ill-conditioned inputs:

- Everything is computed in the inputs' dtype (half precision in float32) and returned in it.
  ``fro`` is kept to one subtraction and one sum of squares (it is the cheap metric), so like
  ``torch.linalg.matrix_norm`` its squares overflow or underflow where ``|a - b|`` entries
  leave about ``1e-19 .. 1e19`` in float32 (``1e-154 .. 1e154`` in float64): float32 matrices
  of ``1e25`` give ``inf``, of ``1e-25`` give 0; rescale such inputs (or use float64) first.
  Rounding grows with the condition numbers: measured against float64 references with both
  condition numbers ``1e6`` (d <= 16), float32 gives a median relative error of about
  ``3e-4`` (``log_euclidean``) and ``1e-4`` (``stein``, ``affine_invariant``), at worst about
  ``5e-3``; float64 about ``1e-12`` (``affine_invariant`` vs exact, ``log_euclidean``).
  ``affine_invariant`` takes singular values of ``L_A^-1 L_B`` because the eigenvalues of the
  formed ``L_A^-1 B L_A^-T`` lose about ``eps cond(A)`` relative to the largest one: in
  float32 that was a median error of 20% at ``1e6``, and a zero or NaN distance when a small
  eigenvalue came out negative. Pass float64 matrices (``a.double()``) when accuracy matters;
  on CPU that costs up to about 1.8x the float32 time.
- An eigenvalue computed by ``eigh`` has an absolute error of about ``eps * lambda_max``, so
  ``log_euclidean`` raises every eigenvalue in ``[-d eps lambda_max, eps lambda_max]`` (zero up
  to rounding; ``d`` is the matrix size, ``eps`` that of the compute dtype) to
  ``eps lambda_max`` before the log: a matrix that is SPD up to rounding, such as a float32
  matrix that passes the SPD check although ``eigh`` returns a slightly negative eigenvalue for
  it, gives a finite distance, not NaN. Eigenvalues below ``eps lambda_max`` are not
  resolved (a condition number past ``1 / eps``: about ``1e7`` in float32, ``4e15`` in
  float64), so two matrices that differ only there read the same, down to a distance of 0
  (float32 ``diag(1e-8, 1)`` and ``diag(1e-9, 1)``: ``affine_invariant`` still tells them
  apart); compute such matrices in float64. A more negative eigenvalue, or
  ``lambda_max <= 0``, is not SPD and gives NaN; so does a failed Cholesky in ``stein`` and
  ``affine_invariant``. With ``check=False`` a non-SPD input therefore gives NaN, where
  ``check=True`` raises.

Example:
    >>> import torch
    >>> a = torch.eye(3, dtype=torch.float64)
    >>> round(spd_distance(a, 2 * a, metric="affine_invariant").item(), 6)  # sqrt(3) log 2
    1.200566
"""

from __future__ import annotations

import torch

from torchdoctor.ops._flags import require_flag
from torchdoctor.ops._validation import (
    raise_not_spd,
    raise_not_symmetric,
    require_broadcastable,
    require_data,
    require_finite,
    require_float,
    require_same_device,
    require_same_dtype,
    require_size,
    require_square,
)

__all__ = ["spd_distance", "spd_log", "SPD_METRICS"]

#: Metric names accepted by ``spd_distance``, cheapest first.
SPD_METRICS = ("fro", "log_euclidean", "stein", "affine_invariant")

_HALF = (torch.float16, torch.bfloat16)


def _safe_sqrt(f: torch.Tensor) -> torch.Tensor:
    """``sqrt(f)``; 0 with gradient 0 where ``f <= 0``; NaN stays NaN (``NaN <= 0`` is False)."""
    nonpositive = f <= 0
    return torch.where(nonpositive, 0, torch.where(nonpositive, 1, f).sqrt())


def _floor_eigenvalues(eigenvalues: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues ``(..., d)`` of SPD matrices, made safe for ``log``.

    Values in ``[-d eps lambda_max, eps lambda_max]`` (zero up to ``eigh``'s rounding) are
    raised to ``eps lambda_max``; a matrix with a more negative eigenvalue or with
    ``lambda_max <= 0`` is not SPD and gets NaN eigenvalues (NaN stays NaN).

    Example:
        >>> _floor_eigenvalues(torch.tensor([-1e-16, 1e-30, 1.0], dtype=torch.float64)).tolist()
        [2.220446049250313e-16, 2.220446049250313e-16, 1.0]
        >>> _floor_eigenvalues(torch.tensor([-0.5, 1.0])).tolist()
        [nan, nan]
    """
    largest = eigenvalues[..., -1:]
    floor = torch.finfo(eigenvalues.dtype).eps * largest
    spd = ((eigenvalues >= -eigenvalues.shape[-1] * floor) & (largest > 0)).all(-1, keepdim=True)
    return torch.where(spd, torch.maximum(eigenvalues, floor), torch.nan)


def _log_eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Floored eigenvalues and eigenvectors; NaN eigenvalues for a matrix holding NaN/Inf
    (``eigh`` raises on it: it is decomposed as the identity instead, then marked NaN)."""
    finite = a.isfinite().all((-2, -1))
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    eigenvalues, vectors = torch.linalg.eigh(torch.where(finite[..., None, None], a, eye))
    eigenvalues = torch.where(finite[..., None], eigenvalues, torch.nan)
    return _floor_eigenvalues(eigenvalues), vectors


def _log_derivative(
    eigenvalues: torch.Tensor, vectors: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """Daleckii-Krein: the derivative of ``logm`` at ``U diag(l) U^T`` applied to ``grad``."""
    li = eigenvalues.unsqueeze(-1)
    lj = eigenvalues.unsqueeze(-2)
    x = li / lj - 1
    same = x == 0
    safe_x = torch.where(same, 1, x)
    divided = torch.where(same, 1 / lj, torch.log1p(safe_x) / (safe_x * lj))
    inner = vectors.mT @ ((grad + grad.mT) / 2) @ vectors
    return vectors @ (divided * inner) @ vectors.mT


class _SymmetricLog(torch.autograd.Function):
    """Matrix logarithm of SPD matrices with a Daleckii-Krein backward (finite everywhere).

    The first-order backward reuses the forward's eigen-decomposition. With
    ``create_graph=True`` it recomputes it from the input with ``torch.linalg.eigh`` under
    autograd, so second derivatives are those of ``eigh`` (exact for distinct eigenvalues).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        eigenvalues, vectors = _log_eigh(a)
        ctx.save_for_backward(a, eigenvalues, vectors)
        return (vectors * eigenvalues.log().unsqueeze(-2)) @ vectors.mT

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        a, eigenvalues, vectors = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: make the backward differentiable in a
            eigenvalues, vectors = _log_eigh(a)
        return _log_derivative(eigenvalues, vectors, grad)


def spd_log(a: torch.Tensor) -> torch.Tensor:
    """Matrix logarithm of SPD matrices ``(..., d, d)``, with finite gradients everywhere.

    Returns ``a``'s dtype; half precision is computed in float32 (``eigh`` has no half
    kernel). Eigenvalues within rounding of zero are raised to ``eps * lambda_max`` and a
    non-SPD matrix (or one holding NaN/Inf) gives NaN, as described in the module docstring
    (no check, no host sync); the other matrices of the batch are unaffected.
    Second derivatives are exact where the eigenvalues are distinct (NaN where they repeat).

    Example:
        >>> spd_log(torch.eye(2) * torch.e).round(decimals=5).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
        >>> spd_log(torch.eye(2, dtype=torch.bfloat16) * torch.e).dtype
        torch.bfloat16
    """
    require_float(a, "a")
    require_square(a, "a")
    if a.dtype in _HALF:
        return _SymmetricLog.apply(a.float()).to(a.dtype)
    return _SymmetricLog.apply(a)


#: how far from symmetric a matrix may be, relative to its largest entry: rounding of the
#: precision it was made in (a product ``x @ m @ x.T`` in bfloat16 differs from its transpose
#: by a few bfloat16 ulps; a float32 product passed on as float64, by float32's) stays within
#: it, a matrix that is not symmetric at all (a triangle, ``A`` for ``A A^T``) does not
SYMMETRY_TOLERANCE = {torch.float16: 5e-2, torch.bfloat16: 5e-2}
SYMMETRY_DEFAULT = 1e-3


def _asymmetric(m: torch.Tensor, made_in: torch.dtype | None = None) -> torch.Tensor:
    """Per matrix, whether it is further from symmetric than rounding explains (largest
    ``|m - m^T|`` over :data:`SYMMETRY_TOLERANCE` of its largest entry, for the dtype it was
    made in, ``made_in``, default its own); no matrix of an empty batch or of size 0 is.

    Example:
        >>> _asymmetric(torch.stack([torch.eye(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])]))
        tensor([False,  True])
    """
    if m.shape[-1] == 0:
        return torch.zeros(m.shape[:-2], dtype=torch.bool, device=m.device)
    tolerance = SYMMETRY_TOLERANCE.get(made_in or m.dtype, SYMMETRY_DEFAULT)
    return (m - m.mT).abs().amax((-2, -1)) > tolerance * m.abs().amax((-2, -1))


def _check_spd(
    a: torch.Tensor, b: torch.Tensor, metric: str, made_in: torch.dtype | None = None
) -> None:
    """NaN/Inf and SPD check of both inputs with one host sync (error path syncs more)."""
    require_data(a=a, b=b)
    info_a = torch.linalg.cholesky_ex(a).info != 0
    info_b = torch.linalg.cholesky_ex(b).info != 0
    skew_a, skew_b = _asymmetric(a, made_in), _asymmetric(b, made_in)
    flags = torch.stack(
        [(~torch.isfinite(a)).any() | (~torch.isfinite(b)).any(), info_a.any(), info_b.any(),
         skew_a.any(), skew_b.any()]
    ).tolist()  # the one sync
    if flags[0]:
        require_finite(made_in, a=a, b=b)
    for name, matrices, skew, flagged in (("a", a, skew_a, flags[3]), ("b", b, skew_b, flags[4])):
        if flagged:  # (the factorizations read the lower triangle only: it would pass unseen)
            raise_not_symmetric(name, matrices, skew)
    hint = "this metric needs SPD matrices; regularize them (e.g. covariance(x, shrinkage=0.1))"
    remedy = (  # log_euclidean floors eigenvalues within rounding of zero: no Cholesky needed
        f"or pass check=False to accept it (log_euclidean floors eigenvalues within rounding "
        f"of zero; its smallest eigenvalues are then only as accurate as {a.dtype} allows)"
        if metric == "log_euclidean"
        else ""
    )
    if flags[1]:
        raise_not_spd("a", a, info_a, hint, remedy)
    if flags[2]:
        raise_not_spd("b", b, info_b, hint, remedy)


def _relative_singular_values(
    a: torch.Tensor, b: torch.Tensor, unused: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sigma(L_A^-1 L_B)`` (``sigma^2 = eig(A^-1 B)``) and where it is valid (both SPD and
    finite). Elsewhere, and where ``unused`` (a mask the caller discards) is True, they are
    ``1 .. d``: distinct, so not even a second derivative through ``svdvals`` turns NaN there.

    Singular values of the triangular factor avoid forming ``L_A^-1 B L_A^-T``, whose rounding
    (about ``eps cond(A)`` relative) swamps its small eigenvalues: float32 at cond 1e6 lost
    about 20% that way.

    Example:
        >>> _relative_singular_values(torch.eye(2), 4 * torch.eye(2))[0].tolist()
        [2.0, 2.0]
        >>> _relative_singular_values(torch.eye(2), -torch.eye(2))[1].item()  # not SPD
        False
    """
    chol_a, info_a = torch.linalg.cholesky_ex(a)
    chol_b, info_b = torch.linalg.cholesky_ex(b)
    factor = torch.linalg.solve_triangular(chol_a, chol_b, upper=False)
    valid = (info_a == 0) & (info_b == 0) & factor.isfinite().all((-2, -1))
    # An infinite entry can factor (L_A = diag(inf, ...)) into a finite L_A^-1 L_B with a
    # zero singular value: a made-up distance one way, NaN the other. NaN/Inf give NaN.
    valid = valid & a.isfinite().all((-2, -1)) & b.isfinite().all((-2, -1))
    keep = valid if unused is None else valid & ~unused
    spread = torch.arange(1, a.shape[-1] + 1, dtype=a.dtype, device=a.device).diag()
    factor = torch.where(keep[..., None, None], factor, spread)  # svdvals raises on NaN
    return torch.linalg.svdvals(factor).clamp_min(torch.finfo(a.dtype).tiny), valid


def _log_cosh(u: torch.Tensor) -> torch.Tensor:
    """``log cosh(u)`` without cancellation near 0 (``log1p(2 sinh^2(u / 2))``) or overflow for
    large ``|u|`` (``|u| - log 2 + log1p(exp(-2 |u|))``); each branch sees only its own inputs,
    so neither leaves a NaN in the other's gradient.

    Example:
        >>> [f"{v:.6e}" for v in _log_cosh(torch.tensor([1e-5, 800.0], dtype=torch.float64))]
        ['5.000000e-11', '7.993069e+02']
    """
    large = u.abs() > 1
    small_u = torch.where(large, 0, u)
    large_u = torch.where(large, u, 2).abs()
    near_zero = torch.log1p(2 * torch.sinh(small_u / 2).pow(2))
    far = large_u - torch.log(torch.tensor(2.0, dtype=u.dtype)) + torch.log1p(torch.exp(-2 * large_u))
    return torch.where(large, far, near_zero)


def spd_distance(
    a: torch.Tensor, b: torch.Tensor, metric: str = "fro", check: bool = True
) -> torch.Tensor:
    """Distance between matrices ``a`` and ``b`` ``(..., d, d)`` (leading dims broadcast).

    Args:
        a, b: symmetric positive definite matrices (any matrices for ``fro``).
        metric: one of ``SPD_METRICS``: ``"fro"``, ``"log_euclidean"``, ``"stein"``,
            ``"affine_invariant"``; definitions as pyRiemann's distance_euclid,
            distance_logeuclid, distance_logdet and distance_riemann.
        check: NaN/Inf check, plus a symmetry and an SPD check for the non-``fro`` metrics
            (their factorizations read one triangle), with one host sync; the error names the
            batch index and the largest asymmetry or the smallest eigenvalue. The SPD check is a
            Cholesky factorization in the compute dtype, so a matrix that is SPD but too
            ill-conditioned for float32 is rejected too; its error says so and suggests float64
            or jitter (``log_euclidean`` with ``check=False`` accepts it). ``False`` on a hot
            path: no host sync, and a non-SPD (or NaN) input gives NaN, never a silent 0;
            so does an infinite entry, except for ``fro`` (its distance is then ``inf``).

    Returns:
        ``(...)`` distances in the inputs' dtype (half precision is computed in float32);
        differentiable with finite gradients, also at ``a == b``. Accuracy in float32 and the
        handling of eigenvalues within rounding of zero: see the module docstring.

    Example:
        >>> a = torch.eye(2).expand(4, 2, 2)
        >>> spd_distance(a, 3 * torch.eye(2), metric="fro")
        tensor([2.8284, 2.8284, 2.8284, 2.8284])
    """
    if metric not in SPD_METRICS:
        raise ValueError(f"metric must be one of {SPD_METRICS}, got {metric!r}")
    check = require_flag(check, "check")
    for name, value in (("a", a), ("b", b)):
        require_float(value, name)
        require_square(value, name)
    require_size(b, "b", -1, a.shape[-1], "the matrix size d of a")
    require_same_device(a=a, b=b)
    require_same_dtype(a=a, b=b)
    require_broadcastable("a", a.shape[:-2], "b", b.shape[:-2])
    dtype = a.dtype
    if dtype in _HALF:
        a, b = a.float(), b.float()
    if check:
        if metric == "fro":
            require_finite(dtype, a=a, b=b)
        else:
            _check_spd(a, b, metric, dtype)
    if metric == "fro":
        squared = (a - b).pow(2).sum((-2, -1))
    elif metric == "log_euclidean":
        squared = (_SymmetricLog.apply(a) - _SymmetricLog.apply(b)).pow(2).sum((-2, -1))
    elif metric == "stein":
        # sum_i log((1 + l_i) / (2 sqrt l_i)) = sum_i log cosh(log sigma_i), l = eig(A^-1 B) =
        # sigma(L_A^-1 L_B)^2. The textbook logdet((A+B)/2) - (logdet A + logdet B) / 2 cancels
        # O(1) terms to an O(|A - B|^2) result: float32 gave 0 for B = A (1 + 1e-4).
        same = (a == b).all((-2, -1))  # exactly 0 there, with a zero gradient (not ~eps^2)
        singular, valid = _relative_singular_values(a, b, same)
        squared = torch.where(valid, _log_cosh(singular.log()).sum(-1), torch.nan)
        squared = torch.where(same & valid, 0, squared)  # (inf == inf: still NaN)
    else:
        singular, valid = _relative_singular_values(a, b)
        squared = torch.where(valid, (2 * singular.log()).pow(2).sum(-1), torch.nan)
    return _safe_sqrt(squared).to(dtype)

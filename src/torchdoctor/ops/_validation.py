"""Shared input checks for ``torchdoctor.ops``: clear errors, and no host sync unless asked.

Metadata checks (type, dtype, rank, sizes, device) read only tensor metadata, so they are free
and never synchronize with the device. Value checks (``require_finite``) must look at the data:
they cost exactly one host sync for all the tensors they are given, so ops run them only when
called with ``check=True`` and skip them on the hot path (``check=False``).

Every error says what was wrong, what was expected and what to do.

Example:
    >>> import torch
    >>> from torchdoctor.ops._validation import require_float, require_rank
    >>> x = torch.zeros(2, 3, 4)
    >>> require_float(x, "x")
    >>> require_rank(x, "x", 2, layout="(..., n, d)")
"""

from __future__ import annotations

import math
import numbers
import operator

import torch

__all__ = [
    "require_tensor",
    "require_float",
    "require_integer",
    "widen_integer",
    "require_gatherable",
    "require_rank",
    "require_size",
    "require_square",
    "require_same_device",
    "require_same_dtype",
    "require_broadcastable",
    "require_finite",
    "require_data",
    "require_count",
    "require_real",
    "require_eps",
    "describe",
    "raise_not_spd",
]


#: unsigned integer dtypes torch keeps "barebones" (storage, casts): most ops refuse them
_BAREBONES = tuple(getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n))


def describe(x: torch.Tensor, made_in: torch.dtype | None = None) -> str:
    """A short description of a tensor for error messages: shape, dtype and device.

    ``made_in`` names the caller's dtype when ``x`` is a widened copy (half precision is
    computed in float32): the message then describes the tensor the caller passed.

    Example:
        >>> describe(torch.zeros(2, 3))
        'shape (2, 3), dtype torch.float32, device cpu'
        >>> describe(torch.zeros(2), made_in=torch.float16)
        'shape (2,), dtype torch.float16, device cpu'
    """
    return f"shape {tuple(x.shape)}, dtype {made_in or x.dtype}, device {x.device}"


def require_tensor(x: object, name: str) -> None:
    """Raise TypeError unless ``x`` is a ``torch.Tensor``.

    Example:
        >>> require_tensor(torch.zeros(1), "x")
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; "
            f"convert it with torch.as_tensor({name})"
        )


def require_float(x: object, name: str) -> None:
    """Raise unless ``x`` is a floating-point tensor (float16/bfloat16/float32/float64).

    Example:
        >>> require_float(torch.zeros(1, dtype=torch.float64), "x")
    """
    require_tensor(x, name)
    assert isinstance(x, torch.Tensor)
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype}; "
            f"cast it first, e.g. {name}.float()"
        )


def require_integer(x: object, name: str) -> None:
    """Raise unless ``x`` is an integer tensor (bool and floating point are rejected).

    Example:
        >>> require_integer(torch.tensor([0, 2, 1]), "labels")
    """
    require_tensor(x, name)
    assert isinstance(x, torch.Tensor)
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(
            f"{name} must be an integer tensor (e.g. torch.long), got dtype {x.dtype}; "
            f"cast it first, e.g. {name}.long()"
        )



def widen_integer(x: torch.Tensor) -> torch.Tensor:
    """``x`` as int64 when its dtype is one torch keeps barebones (uint16/32/64: no comparisons
    or reductions on the CPU), else ``x`` itself: ids and counts of those dtypes then work. A
    uint64 value of 2**63 or more does not fit: it becomes the largest int64 (still a huge
    non-negative id, never a negative "ignored" one). No host sync.

    Example:
        >>> widen_integer(torch.tensor([1, 0], dtype=torch.uint32)).dtype
        torch.int64
        >>> widen_integer(torch.tensor([2**64 - 1], dtype=torch.uint64)).tolist()
        [9223372036854775807]
    """
    if x.dtype not in _BAREBONES:
        return x
    wide = x.long()
    if x.dtype == getattr(torch, "uint64", None):  # (wrapped around: 2**63.. read negative)
        wide = torch.where(wide < 0, torch.full_like(wide, torch.iinfo(torch.long).max), wide)
    return wide


def require_gatherable(x: torch.Tensor, name: str) -> None:
    """Raise TypeError when ``x``'s values cannot be gathered or scattered by torch (the
    barebones unsigned dtypes); ops that move values, not ids, cannot widen them silently.

    Example:
        >>> require_gatherable(torch.zeros(2), "values")
    """
    if x.dtype in _BAREBONES:
        raise TypeError(
            f"{name} has dtype {x.dtype}, which torch cannot index or gather (it supports "
            f"that dtype in a few ops only); cast it first, e.g. {name}.long()"
        )


def require_rank(x: torch.Tensor, name: str, min_rank: int, layout: str = "") -> None:
    """Raise ValueError unless ``x.ndim >= min_rank``; ``layout`` names the expected dims.

    Example:
        >>> require_rank(torch.zeros(4, 3), "x", 2, layout="(..., n, d)")
    """
    if x.ndim < min_rank:
        expected = f" {layout}" if layout else ""
        raise ValueError(
            f"{name} must have at least {min_rank} dimensions{expected}, got {describe(x)}; "
            f"add the missing dimensions, e.g. {name}.unsqueeze(0)"
        )


def require_size(x: torch.Tensor, name: str, dim: int, size: int, meaning: str) -> None:
    """Raise ValueError unless ``x.shape[dim] == size``; ``meaning`` says where size comes from.

    Example:
        >>> require_size(torch.zeros(4, 3), "x", -1, 3, "the feature size d of y")
    """
    if x.shape[dim] != size:
        raise ValueError(
            f"{name} must have size {size} ({meaning}) in dimension {dim}, got {describe(x)}"
        )


def require_square(x: torch.Tensor, name: str) -> None:
    """Raise ValueError unless ``x`` is a batch of square matrices ``(..., d, d)``.

    Example:
        >>> require_square(torch.eye(3).expand(2, 3, 3), "cov")
    """
    require_rank(x, name, 2, layout="(..., d, d)")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"{name} must be a batch of square matrices (..., d, d), got {describe(x)}"
        )


def require_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise ValueError unless all given tensors (``None`` skipped) are on one device.

    Example:
        >>> require_same_device(x=torch.zeros(1), y=torch.ones(1))
    """
    named = [(k, v) for k, v in tensors.items() if v is not None]
    for name, value in named:  # (a NumPy array or a list: say so, not "cpu but cpu")
        require_tensor(value, name)
    if not named:
        return
    first_name, first = named[0]
    for name, value in named[1:]:
        if value.device != first.device:
            raise ValueError(
                f"{name} is on {value.device} but {first_name} is on {first.device}; "
                f"move them to one device, e.g. {name}.to({first_name}.device)"
            )


def require_same_dtype(**tensors: torch.Tensor | None) -> None:
    """Raise TypeError unless all given tensors (``None`` skipped) share one dtype.

    Example:
        >>> require_same_dtype(x=torch.zeros(1), y=torch.ones(1))
    """
    named = [(k, v) for k, v in tensors.items() if v is not None]
    if not named:
        return
    first_name, first = named[0]
    for name, value in named[1:]:
        if value.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {value.dtype} but {first_name} has {first.dtype}; "
                f"cast them to one dtype, e.g. {name}.to({first_name}.dtype)"
            )


def require_broadcastable(name_a: str, shape_a: tuple, name_b: str, shape_b: tuple) -> tuple:
    """Return the broadcast of two batch shapes, or raise ValueError naming both.

    Example:
        >>> require_broadcastable("x", (4, 1), "chol", (3,))
        (4, 3)
    """
    try:
        return tuple(torch.broadcast_shapes(tuple(shape_a), tuple(shape_b)))
    except RuntimeError:
        raise ValueError(
            f"the batch dimensions of {name_a} {tuple(shape_a)} and {name_b} {tuple(shape_b)} "
            f"do not broadcast; give them equal leading dimensions or size-1 ones"
        ) from None


def require_count(value: object, name: str, least: int = 0, what: str | None = None) -> int:
    """``value`` as a Python int, or ValueError unless it is an integer ``>= least``.

    Any integer-like is accepted through ``operator.index`` (``int``, NumPy integers such as
    ``np.int64(2)``); ``bool``, floats (even ``2.0``) and tensors are rejected (read a tensor
    with ``int(t)`` yourself: it is a host sync). ``what`` replaces the default description
    (``"a non-negative int"``, ``"a positive int"`` or ``"an int >= least"``).

    Example:
        >>> import numpy as np
        >>> require_count(np.int64(2), "k")
        2
        >>> try:
        ...     require_count(True, "k")
        ... except ValueError as e:
        ...     print(e)
        k must be a non-negative int, got True; pass a Python or NumPy integer
    """
    if what is None:
        what = {0: "a non-negative int", 1: "a positive int"}.get(least, f"an int >= {least}")
    number = None
    if not isinstance(value, (bool, torch.Tensor)):
        try:
            number = operator.index(value)
        except TypeError:
            pass
    if number is None:
        hint = "; pass a Python or NumPy integer"
        if isinstance(value, torch.Tensor):
            hint += f" (e.g. int({name.split()[-1]}): reading a tensor is a host sync)"
        raise ValueError(f"{name} must be {what}, got {value!r}{hint}")
    if number < least:
        raise ValueError(f"{name} must be {what}, got {number}")
    return int(number)


def require_real(value: object, name: str) -> None:
    """Raise TypeError unless ``value`` is a real number: a Python or NumPy int/float, or a
    0-dim real (integer or floating-point) tensor; a tensor of any other shape (e.g. one value
    per batch element) is refused. Range checks stay with the op, which knows the range. The
    ops read such a hyperparameter on the host: a 0-dim tensor on an accelerator costs one host
    sync per call there, so pass Python numbers on a hot path.

    Example:
        >>> require_real(1e-6, "eps")
        >>> try:
        ...     require_real(None, "eps")
        ... except TypeError as e:
        ...     print(e)
        eps must be a real number, got None (NoneType); pass a Python float or int
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise TypeError(
            f"{name} must be a real number, got {value!r} ({type(value).__name__}); "
            "pass a Python float or int"
        )
    if isinstance(value, torch.Tensor) and (
        value.ndim != 0 or value.dtype == torch.bool or value.is_complex()
    ):
        raise TypeError(
            f"{name} must be a single real number (a Python number or a 0-dim tensor), got a "
            f"tensor of {describe(value)}; one value serves the whole batch: pass a Python float"
        )


def require_eps(eps: object, name: str) -> float:
    """A DPP stopping threshold ``eps`` as a Python float; ValueError unless finite and
    ``>= 0`` (NaN or inf would stop every problem at its first step, a negative one never).

    Example:
        >>> require_eps(1e-10, "eps")
        1e-10
    """
    require_real(eps, name)
    eps = float(eps)  # type: ignore[arg-type]
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"{name} must be finite and >= 0, got {eps}; use e.g. 1e-10")
    return eps


def require_data(**tensors: torch.Tensor | None) -> None:
    """Raise ValueError for a meta tensor (shapes only, no values) given to an op or a check
    that must read values. Metadata only: no host sync.

    Example:
        >>> require_data(x=torch.zeros(2))
        >>> try:
        ...     require_data(x=torch.zeros(2, device="meta"))
        ... except ValueError as e:
        ...     print(str(e)[:39])
        x needs real data; got a meta tensor (s
    """
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.device.type == "meta":
            raise ValueError(
                f"{name} needs real data; got a meta tensor ({describe(value)}): this reads "
                f"its values; pass a tensor on a real device (or check=False where the op "
                f"offers it, to skip value checks)"
            )


def require_finite(made_in: torch.dtype | None = None, **tensors: torch.Tensor | None) -> None:
    """Raise ValueError if any given tensor holds NaN or Inf. One host sync for all of them.

    The error names the tensor and the index of its first non-finite entry. Ops call this only
    when ``check=True``; pass ``check=False`` on a hot path to skip it (no sync at all).
    ``made_in``: the caller's dtype when the tensors are widened copies of half inputs (the
    message names it, not float32; widening keeps every NaN/Inf where it was).

    Example:
        >>> require_finite(x=torch.zeros(2), y=torch.ones(3))
    """
    named = [(k, v) for k, v in tensors.items() if v is not None and v.numel() > 0]
    if not named:
        return
    require_data(**dict(named))
    flags = torch.stack([(~torch.isfinite(v)).any() for _, v in named])
    if not bool(flags.any()):  # the one sync
        return
    for (name, value), bad in zip(named, flags.tolist()):
        if bad:
            index = tuple(int(i) for i in (~torch.isfinite(value)).nonzero()[0].tolist())
            entry = value[index].item()
            raise ValueError(
                f"{name} contains non-finite values (first {entry} at index {index}, "
                f"{describe(value, made_in)}); remove or replace NaN/Inf before calling this op, "
                f"e.g. torch.nan_to_num({name})"
            )


def raise_not_spd(
    name: str, matrices: torch.Tensor, failed: torch.Tensor, hint: str, remedy: str = ""
) -> None:
    """Raise ValueError for the first matrix flagged in ``failed`` (an error path: syncs freely).

    ``failed`` flags matrices whose Cholesky factorization failed. The message names the batch
    index and the smallest eigenvalue of that matrix (computed in float64), then ``hint``.
    When that eigenvalue is positive the matrix is SPD but too ill-conditioned to factor in
    its own dtype: the message says so, with its condition number, and suggests float64,
    jitter and ``remedy`` (a further way out the caller offers) instead of ``hint``.

    Example:
        >>> m = torch.stack([torch.eye(2), -torch.eye(2)])
        >>> try:
        ...     raise_not_spd("cov", m, torch.tensor([False, True]), "regularize it")
        ... except ValueError as e:
        ...     print(str(e)[:58])
        cov is not symmetric positive definite at batch index (1,)
        >>> tiny = torch.diag(torch.tensor([1.0, 1e-30]))  # SPD, but cond 1e30
        >>> try:
        ...     raise_not_spd("cov", tiny, torch.tensor(True), "regularize it")
        ... except ValueError as e:
        ...     print(str(e)[:70])
        the Cholesky factorization of cov (the single matrix) failed in torch.
    """
    index = tuple(int(i) for i in failed.nonzero()[0].tolist()) if failed.ndim else ()
    matrix = matrices[index]
    # Of the lower triangle, which the factorization read: (M + M^T) / 2 of a matrix that is not
    # symmetric can be SPD where it is not, and the error then blamed conditioning (round 8).
    eigenvalues = torch.linalg.eigvalsh(matrix.double())
    smallest, largest = eigenvalues[0].item(), eigenvalues[-1].item()
    where = f"at batch index {index}" if index else "(the single matrix)"
    gap = (matrix - matrix.mT).abs().max().item() if matrix.numel() else 0.0
    if gap > 0 and gap > 1e-3 * matrix.abs().max().item():
        hint = (f"{hint}; only its lower triangle is read, and it is not symmetric (largest "
                f"|{name} - {name}^T| {gap:.3e}): symmetrize it or check how it is made")
    if smallest > 0:  # SPD as far as float64 tells: the factorization lost it to rounding
        wider = (
            f"compute in float64 (e.g. {name}.double()), " if matrix.dtype != torch.float64 else ""
        )
        extra = f", {remedy}" if remedy else ""
        raise ValueError(
            f"the Cholesky factorization of {name} {where} failed in {matrix.dtype}, although "
            f"its smallest eigenvalue (computed in float64) is positive, {smallest:.3e}: the "
            f"matrix is ill-conditioned (condition number ~{largest / smallest:.1e}) for "
            f"{matrix.dtype}; {wider}add jitter to its diagonal or regularize it (e.g. "
            f"covariance(x, shrinkage=0.1)){extra}"
        )
    raise ValueError(
        f"{name} is not symmetric positive definite {where}: smallest eigenvalue "
        f"{smallest:.3e}; {hint}"
    )


def raise_not_symmetric(name: str, matrices: torch.Tensor, flagged: torch.Tensor) -> None:
    """Raise ValueError for the first matrix flagged as not symmetric (an error path: syncs
    freely), with its largest ``|m - m^T|`` and the way out.

    Example:
        >>> m = torch.tensor([[1.0, 0.5], [0.0, 1.0]])
        >>> try:
        ...     raise_not_symmetric("a", m, torch.tensor(True))
        ... except ValueError as e:
        ...     print(str(e)[:60])
        a is not symmetric (the single matrix): the largest |a - a^T
    """
    index = tuple(int(i) for i in flagged.nonzero()[0].tolist()) if flagged.ndim else ()
    matrix = matrices[index]
    where = f"at batch index {index}" if index else "(the single matrix)"
    gap = (matrix - matrix.mT).abs().max().item()
    raise ValueError(
        f"{name} is not symmetric {where}: the largest |{name} - {name}^T| is {gap:.3e} against "
        f"a largest entry of {matrix.abs().max().item():.3e}; these metrics take symmetric "
        f"positive definite matrices and read one triangle only. Symmetrize it "
        f"(({name} + {name}.mT) / 2) if the difference is rounding, else check how it is made"
    )

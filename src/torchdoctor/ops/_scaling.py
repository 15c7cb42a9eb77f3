"""Exact power-of-two rescaling, so sums of squares neither overflow nor underflow.

A distance ``sqrt(sum v^2)`` or a covariance ``sum c c^T`` squares its inputs: in float32 a
value above about ``1.8e19`` overflows to ``inf`` and one below about ``1e-19`` underflows
to 0 once squared, although the result itself (``5e25``, ``5e-25``, a covariance entry of
``9e37``) fits. Dividing the inputs by a power of two ``s`` near their largest magnitude and
multiplying the result back keeps every intermediate in range. Multiplying by a power of two
is exact, so wherever nothing overflowed or underflowed the result is bit-for-bit the same as
without the rescaling. ``s`` is computed without autograd: it is piecewise constant, and the
ops using it are homogeneous in the scaled values, so their gradients are exact. No host sync.

Example:
    >>> import torch
    >>> v = torch.tensor([[3e25, 4e25], [0.0, 0.0]])
    >>> torch.linalg.vector_norm(v, dim=-1).tolist()  # 5e25 fits float32, its square does not
    [inf, 0.0]
    >>> s = power_of_two_scale(v, -1)
    >>> torch.log2(s).squeeze(-1).tolist()
    [85.0, 0.0]
    >>> [f"{n:.4g}" for n in (torch.linalg.vector_norm(v / s, dim=-1) * s.squeeze(-1)).tolist()]
    ['5e+25', '0']
"""

from __future__ import annotations

import torch

__all__ = ["power_of_two_scale"]


def power_of_two_scale(
    v: torch.Tensor, dim: int | tuple[int, ...], *others: torch.Tensor
) -> torch.Tensor:
    """``2**(e - 1)`` where ``2**e`` bounds the largest magnitude over ``dim`` (kept as size-1
    dims) of ``v`` and of ``others`` (reduced over the same dims, then broadcast); 1 where
    that magnitude is 0, infinite or NaN (no rescaling: the result is inf or NaN anyway), or
    ``dim`` is empty. ``v / s`` then has magnitudes below 2. A handful of small ops.

    Example:
        >>> power_of_two_scale(torch.tensor([0.3, -5.0]), -1).tolist()
        [4.0]
        >>> power_of_two_scale(torch.zeros(2), -1, torch.tensor([0.0, 3e-3])).tolist()
        [0.001953125]
    """
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    with torch.no_grad():
        magnitude = None
        for tensor in (v, *others):
            if any(tensor.shape[d] == 0 for d in dims):  # nothing to reduce: magnitude 0
                shape = list(tensor.shape)
                for d in dims:
                    shape[d] = 1
                largest = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
            else:
                largest = torch.linalg.vector_norm(tensor, float("inf"), dims, keepdim=True)
            magnitude = largest if magnitude is None else torch.maximum(magnitude, largest)
        mantissa, _ = torch.frexp(magnitude)  # magnitude = mantissa * 2**e, 0.5 <= mantissa < 1
        # magnitude / (2 * mantissa) = 2**(e - 1) exactly, also for subnormal magnitudes; it is
        # NaN (0/0, inf/inf, NaN) exactly where no rescaling is wanted.
        return torch.nan_to_num(magnitude / (2 * mantissa), nan=1.0)

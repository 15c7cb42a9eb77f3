"""Batched covariance with optional shrinkage, and an exponential moving average of covariances.

Seed 000 computes one covariance ``Σplus`` of part features per image and suggests smoothing
it with an EMA so the Cholesky factor stays stable from step to step.

Example:
    >>> import torch
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    >>> covariance(x).tolist()
    [[2.0, 4.0], [4.0, 8.0]]
"""

from __future__ import annotations

import torch
from torch import nn

from torchdoctor.ops._validation import (
    require_finite,
    require_float,
    require_rank,
    require_same_device,
    require_square,
)

__all__ = ["covariance", "CovarianceEMA"]


def covariance(
    x: torch.Tensor, shrinkage: float = 0.0, unbiased: bool = True, check: bool = False
) -> torch.Tensor:
    """Covariance of ``n`` samples of dimension ``d``, batched: ``(..., n, d) -> (..., d, d)``.

    Args:
        x: samples ``(..., n, d)`` (rows are samples).
        shrinkage: ``alpha`` in ``[0, 1]``: returns ``(1 - alpha) S + alpha (trace(S) / d) I``,
            which keeps the matrix well conditioned (and SPD when ``alpha > 0`` and ``S != 0``)
            even with fewer samples than dimensions, as with seed 000's K = 4 parts in d = 64.
        unbiased: divide by ``n - 1`` (needs ``n >= 2``) instead of ``n``.
        check: NaN/Inf check of ``x`` (one host sync); off by default, as this is a hot-path op.

    Returns:
        ``(..., d, d)`` symmetric matrices in ``x``'s dtype; differentiable.

    Example:
        >>> x = torch.randn(8, 4, 64)   # 8 images, K = 4 parts, d = 64
        >>> covariance(x, shrinkage=0.1).shape
        torch.Size([8, 64, 64])
    """
    require_float(x, "x")
    require_rank(x, "x", 2, layout="(..., n, d)")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage!r}")
    n, d = x.shape[-2], x.shape[-1]
    if n < (2 if unbiased else 1):
        raise ValueError(
            f"covariance needs at least {2 if unbiased else 1} samples along dimension -2 of x "
            f"(..., n, d), got n = {n}; pass more samples or unbiased=False"
        )
    if check:
        require_finite(x=x)
    centered = x - x.mean(dim=-2, keepdim=True)
    cov = centered.mT @ centered / (n - 1 if unbiased else n)
    cov = (cov + cov.mT) / 2  # exactly symmetric
    if shrinkage > 0:
        target = cov.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        cov = (1 - shrinkage) * cov + shrinkage * target * eye
    return cov


class CovarianceEMA(nn.Module):
    """Exponential moving average of covariance matrices, kept on the device.

    ``update(cov)`` folds in a new batch ``(..., d, d)``: ``avg = decay * avg + (1 - decay) *
    cov``. With ``bias_correction`` (as in Adam) the average starts at zero and ``value()``
    divides by ``1 - decay ** num_updates``, so the first value equals the first update
    instead of being shrunk toward zero. State lives in buffers: ``.to(device)`` moves it and
    ``state_dict()`` saves it; no step ever reads it back to the host. Updates are detached:
    the average carries no autograd graph across steps.

    Example:
        >>> ema = CovarianceEMA(decay=0.9)
        >>> ema.update(torch.eye(2))
        >>> ema.update(3 * torch.eye(2))
        >>> [round(v, 4) for v in ema.value().diagonal().tolist()]
        [2.0526, 2.0526]
    """

    average: torch.Tensor | None
    num_updates: torch.Tensor

    def __init__(self, decay: float = 0.99, bias_correction: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.bias_correction = bias_correction
        self.register_buffer("average", None)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def update(self, cov: torch.Tensor) -> None:
        """Fold in covariance matrices ``(..., d, d)`` (same shape every call).

        Example:
            >>> CovarianceEMA().update(torch.eye(3))
        """
        require_float(cov, "cov")
        require_square(cov, "cov")
        cov = cov.detach()
        if self.average is None:
            self.average = torch.zeros_like(cov)
            self.num_updates = self.num_updates.to(cov.device)
        elif self.average.shape != cov.shape:
            raise ValueError(
                f"cov has shape {tuple(cov.shape)} but this CovarianceEMA averages shape "
                f"{tuple(self.average.shape)}; use one EMA per shape or call reset()"
            )
        require_same_device(cov=cov, average=self.average)
        self.average.mul_(self.decay).add_(cov.to(self.average.dtype), alpha=1 - self.decay)
        self.num_updates.add_(1)

    def value(self) -> torch.Tensor:
        """The (bias-corrected) average, ``(..., d, d)``; a new tensor, safe to modify.

        Example:
            >>> ema = CovarianceEMA(decay=0.5)
            >>> ema.update(torch.eye(2))
            >>> ema.value().tolist()
            [[1.0, 0.0], [0.0, 1.0]]
        """
        if self.average is None:
            raise ValueError("CovarianceEMA has no value yet; call update(cov) first")
        if not self.bias_correction:
            return self.average.clone()
        steps = self.num_updates.to(self.average.dtype)
        correction = 1 - torch.pow(torch.full_like(steps, self.decay), steps)
        return self.average / correction.clamp_min(torch.finfo(self.average.dtype).tiny)

    def forward(self, cov: torch.Tensor) -> torch.Tensor:
        """``update(cov)`` then ``value()``.

        Example:
            >>> CovarianceEMA()(torch.eye(2)).diagonal().round(decimals=4).tolist()
            [1.0, 1.0]
        """
        self.update(cov)
        return self.value()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # The average is created lazily; make room for a saved one before loading it.
        saved = state_dict.get(prefix + "average")
        if saved is not None and self.average is None:
            self.average = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset(self) -> None:
        """Forget the average (the next ``update`` may use a new shape).

        Example:
            >>> ema = CovarianceEMA(); ema.update(torch.eye(2)); ema.reset()
        """
        self.average = None
        self.num_updates.zero_()

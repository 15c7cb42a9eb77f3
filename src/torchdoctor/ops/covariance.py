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

from torchdoctor.ops._flags import require_flag
from torchdoctor.ops._validation import (
    require_finite,
    require_float,
    require_rank,
    require_real,
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
        ``(..., d, d)`` symmetric matrices in ``x``'s dtype; differentiable. Half precision
        (float16/bfloat16) is computed in float32 and rounded once at the end, so a covariance
        that fits float16 does not overflow in its intermediate sums. Like ``torch.cov``, the
        products of float32 samples about ``1e19`` or more from their mean overflow (``inf``)
        and of ``1e-19`` or less underflow (0): rescale such data first (the covariance
        scales with its square).

    Example:
        >>> x = torch.randn(8, 4, 64)   # 8 images, K = 4 parts, d = 64
        >>> covariance(x, shrinkage=0.1).shape
        torch.Size([8, 64, 64])
    """
    require_float(x, "x")
    require_rank(x, "x", 2, layout="(..., n, d)")
    require_real(shrinkage, "shrinkage")
    unbiased, check = require_flag(unbiased, "unbiased"), require_flag(check, "check")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage!r}")
    n = x.shape[-2]
    if n < (2 if unbiased else 1):
        needs, remedy = (
            ("2 samples", "pass more samples or unbiased=False")
            if unbiased
            else ("1 sample", "the covariance of no samples is undefined: pass some")
        )
        raise ValueError(
            f"covariance needs at least {needs} along dimension -2 of x (..., n, d), "
            f"got n = {n}; {remedy}"
        )
    if check:
        require_finite(x=x)
    if x.dtype in (torch.float16, torch.bfloat16):
        return covariance(x.float(), shrinkage, unbiased).to(x.dtype)
    # Shifted by the first sample first (exact for samples close to each other): the float32
    # mean of samples 1e6 +- 1 is off by ulps of 1e6, which left the covariance 1e-2 off
    # (1e7 +- 1: 100%); the mean of the shifted samples is accurate to ulps of their spread.
    shifted = x - x[..., :1, :]
    centered = shifted - shifted.mean(dim=-2, keepdim=True)
    gram = centered.mT @ centered
    cov = (gram + gram.mT) / (2 * (n - 1 if unbiased else n))  # exactly symmetric
    if shrinkage > 0:
        # Scaled, then the target added to the diagonal in place: forming target * I as a
        # (..., d, d) tensor made five passes over the matrices, costlier than the matmul for
        # seed 000's K = 4 parts in d = 64 (3 ms vs 0.6 ms without shrinkage for 64 images).
        target = cov.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True)
        cov = cov * (1 - shrinkage)
        cov.diagonal(dim1=-2, dim2=-1).add_(target, alpha=shrinkage)
    return cov


class CovarianceEMA(nn.Module):
    """Exponential moving average of covariance matrices, kept on the device.

    ``update(cov)`` folds in a new batch ``(..., d, d)``: ``avg = decay * avg + (1 - decay) *
    cov``. With ``bias_correction`` (as in Adam) that average starts at zero and is divided by
    ``1 - decay ** num_updates``, so the first value equals the first update instead of being
    shrunk toward zero. The corrected average is kept directly, updated as ``avg += w (cov -
    avg)`` with ``w = (1 - decay) / (1 - decay ** num_updates)`` (``w = 1`` at the first
    update), ``w`` computed in float64 (float32 on MPS) and the step in at least float32: the
    first value equals the first update exactly and a constant input stays exactly constant in
    every dtype, including bfloat16/float16 averages and after ``.half()``, where rounding
    ``decay`` to the average's dtype would break the correction (bfloat16 rounds 0.999 to 1).
    Low-precision state still rounds each step: with ``decay`` near 1 keep the average in
    float32. State lives in buffers: ``.to(device)`` moves it and ``state_dict()`` saves it (a
    version-1 state dict, which held the uncorrected average, is corrected when loaded; one
    stripped of its metadata is taken as current); no step ever reads it back to the host.
    ``load_state_dict`` replaces the whole state, so a saved average of another shape loads
    as into a fresh EMA (into this EMA's dtype and device once it holds an average).
    Updates are detached: the average carries no autograd graph across steps. An EMA built or
    first updated under ``torch.inference_mode()`` (made in a warm-up pass) keeps normal tensors,
    which later updates, ``reset`` and ``load_state_dict`` outside it write to.

    Example:
        >>> ema = CovarianceEMA(decay=0.9)
        >>> ema.update(torch.eye(2))
        >>> ema.update(3 * torch.eye(2))
        >>> [round(v, 4) for v in ema.value().diagonal().tolist()]
        [2.0526, 2.0526]
    """

    # 2: ``average`` holds the bias-corrected average (1: the raw one, corrected in value()).
    _version = 2

    average: torch.Tensor | None
    num_updates: torch.Tensor

    def __init__(self, decay: float = 0.99, bias_correction: bool = True) -> None:
        super().__init__()
        require_real(decay, "decay")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.bias_correction = require_flag(bias_correction, "bias_correction")
        self.register_buffer("average", None)
        with torch.inference_mode(False):  # built in a warm-up pass, updated after it (round 8)
            self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _correction(self) -> torch.Tensor:
        """``1 - decay ** num_updates`` as a device tensor, in float64 (float32 on MPS)."""
        steps = self.num_updates
        dtype = torch.float32 if steps.device.type == "mps" else torch.float64
        return 1 - torch.pow(self.decay, steps.to(dtype))

    def update(self, cov: torch.Tensor) -> None:
        """Fold in covariance matrices ``(..., d, d)`` (same shape every call).

        Example:
            >>> CovarianceEMA().update(torch.eye(3))
        """
        require_float(cov, "cov")
        require_square(cov, "cov")
        cov = cov.detach()
        if self.average is None:  # normal tensors even when the first update runs under
            # inference_mode (a warm-up pass): later updates outside it write to them
            with torch.inference_mode(False):
                self.average = torch.zeros_like(cov)
                self.num_updates = self.num_updates.to(cov.device)
        elif self.average.shape != cov.shape:
            raise ValueError(
                f"cov has shape {tuple(cov.shape)} but this CovarianceEMA averages shape "
                f"{tuple(self.average.shape)}; use one EMA per shape or call reset()"
            )
        require_same_device(cov=cov, average=self.average)
        self.num_updates.add_(1)
        average = self.average
        step_dtype = torch.promote_types(average.dtype, torch.float32)
        if self.bias_correction:  # exactly 1 at the first update: avg becomes cov exactly
            weight = (1 - self.decay) / self._correction()
            weight = torch.where(self.num_updates == 1, 1, weight).to(step_dtype)
        else:
            weight = 1 - self.decay
        if average.dtype == step_dtype:
            average.lerp_(cov.to(step_dtype), weight)
        else:  # one rounding to the low-precision average per step
            average.copy_(average.to(step_dtype).lerp_(cov.to(step_dtype), weight))

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
        return self.average.clone()

    def forward(self, cov: torch.Tensor) -> torch.Tensor:
        """``update(cov)`` then ``value()``.

        Example:
            >>> CovarianceEMA()(torch.eye(2)).diagonal().round(decimals=4).tolist()
            [1.0, 1.0]
        """
        self.update(cov)
        return self.value()

    def _load_from_state_dict(  # noqa: ANN001
        self, state_dict, prefix, local_metadata, *args, **kwargs
    ):
        # The average is created lazily; make room for a saved one before loading it. A state
        # of another shape replaces the average, as after reset(): the state is the whole EMA.
        saved = state_dict.get(prefix + "average")
        if saved is None and prefix + "num_updates" in state_dict:
            self.average = None  # (the state of an EMA never updated: no average either)
        elif saved is not None and self.average is None:
            with torch.inference_mode(False):  # (normal tensors, as in update)
                self.average = torch.empty_like(saved)
        elif saved is not None and self.average.shape != saved.shape:
            with torch.inference_mode(False):  # keeps this EMA's dtype and device
                self.average = self.average.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)
        version = local_metadata.get("version")  # None: no metadata (e.g. safetensors): current
        if saved is not None and self.bias_correction and version is not None and version < 2:
            # A version-1 state dict holds the raw average: correct it once (none at 0 steps).
            correction = self._correction()
            corrected = self.average / torch.where(correction > 0, correction, 1)
            self.average.copy_(corrected)

    def reset(self) -> None:
        """Forget the average (the next ``update`` may use a new shape).

        Example:
            >>> ema = CovarianceEMA(); ema.update(torch.eye(2)); ema.reset()
        """
        self.average = None
        self.num_updates.zero_()

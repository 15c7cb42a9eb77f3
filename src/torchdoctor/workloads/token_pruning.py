"""Seed 003: pruning the visual tokens of a video per frame by conditional DPP (CDPruner style).

A video of ``frames`` x 196 image tokens plus ``text_tokens`` text tokens (segment id -1). Image
tokens are L2-normalized (text tokens too, for the relevance only); the quality of token i is
``exp(mean_j cos(image_i, text_j))``; each frame keeps ``keep_per_segment`` tokens chosen by the
greedy MAP of the DPP with kernel ``diag(q) F F^T diag(q)`` restricted to that frame. Text
tokens are always kept. The result is the sorted list of kept global token indices.

- slow: seed 003's "before": a ``torch.where`` per segment (a host sync each), one kernel per
  segment, and the plain greedy DPP with an ``.item()`` argmax per selected token.
- fast: :func:`torchdoctor.ops.select_tokens_per_segment`, all frames in one batched call.

Equivalence: identical kept indices.

Example:
    >>> from torchdoctor.workloads import build
    >>> w = build("token_pruning", scale="tiny")
    >>> bool(torch.equal(w.slow_step(), w.fast_step()))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from torchdoctor.workloads.base import EquivalenceReport, Workload, region, seeded_generator

TOKENS_PER_FRAME = 196


@dataclass
class TokenPruningConfig:
    """The video and token sizes of the token-pruning inference step.

    Example:
        >>> TokenPruningConfig(frames=8).frames
        8
    """

    frames: int = 32  # seed 003's "standard video"; 8 and 64 frames are its other sizes
    tokens_per_frame: int = TOKENS_PER_FRAME
    text_tokens: int = 32
    dim: int = 1024  # CLIP ViT-L/14 visual features, as in the ops benchmark
    keep_ratio: float = 0.25
    dtype: str = "float32"
    seed: int = 0

    @property
    def keep_per_segment(self) -> int:
        return max(1, round(self.tokens_per_frame * self.keep_ratio))


def greedy_dpp_plain(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Chen et al.'s greedy DPP MAP on one (N, N) kernel, written plainly (an .item() per pick).

    Example:
        >>> greedy_dpp_plain(torch.eye(3) * torch.tensor([1.0, 3.0, 2.0]), 2).tolist()
        [1, 2]
    """
    n = kernel.shape[0]
    k = min(k, n)
    cis = torch.zeros(k, n, dtype=kernel.dtype, device=kernel.device)
    di2 = torch.diagonal(kernel).clone()
    selected = []
    for i in range(k):
        j = int(torch.argmax(di2).item())
        selected.append(j)
        if i == k - 1:
            break
        ci = cis[:i, j]
        dj = torch.sqrt(di2[j])
        e = (kernel[j] - ci @ cis[:i]) / dj
        cis[i] = e
        di2 = di2 - e * e
        di2[j] = -float("inf")
    return torch.tensor(selected, dtype=torch.long, device=kernel.device)


def token_quality(features: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """Per-token quality exp(mean cosine to the text tokens); text tokens get quality 1.

    Example:
        >>> f = torch.eye(3); seg = torch.tensor([0, 0, -1])
        >>> token_quality(f, seg).shape
        torch.Size([3])
    """
    text = segment_ids < 0
    # cos(x_i, m) = (x_i . m) / |x_i| for the mean m of the normalized text tokens: three reads
    # of the features (norms, the text mean as one matvec, the scores), never a normalized copy.
    norms = torch.linalg.vector_norm(features, dim=-1).clamp(min=1e-12)
    weights = text.to(features.dtype) / norms
    text_mean = (weights @ features) / text.sum().clamp(min=1)
    return torch.where(text, torch.ones_like(norms), torch.exp((features @ text_mean) / norms))


class TokenPruning(Workload):
    """Seed 003 workload; see the module docstring.

    Example:
        >>> w = TokenPruning(scale="tiny")
        >>> w.config.frames, w.kind
        (3, 'inference')
    """

    name = "token_pruning"
    seed_id = "003"
    summary = "video token pruning: per-frame torch.where + plain greedy DPP vs one batched call"
    kind = "inference"
    Config = TokenPruningConfig
    presets = {
        "tiny": {"frames": 3, "tokens_per_frame": 24, "text_tokens": 5, "dim": 16},
        "cpu": {},
        "seed": {"frames": 64, "dim": 1024},
    }

    def setup(self) -> None:
        cfg = self.config
        g = seeded_generator(cfg.seed)
        dtype = getattr(torch, cfg.dtype)
        n_img = cfg.frames * cfg.tokens_per_frame
        # frames share a slowly drifting content plus per-token noise, as video frames do
        base = torch.randn(cfg.tokens_per_frame, cfg.dim, generator=g)
        drift = 0.3 * torch.randn(cfg.frames, 1, cfg.dim, generator=g).cumsum(0)
        image = (
            base + drift + 0.5 * torch.randn(cfg.frames, cfg.tokens_per_frame, cfg.dim, generator=g)
        )
        text = torch.randn(cfg.text_tokens, cfg.dim, generator=g)
        # text tokens come first, then the frames (as a chat template puts the prompt first)
        features = torch.cat([text, image.reshape(n_img, cfg.dim)])
        segment_ids = torch.cat(
            [
                torch.full((cfg.text_tokens,), -1),
                torch.arange(cfg.frames).repeat_interleave(cfg.tokens_per_frame),
            ]
        )
        self.features = features.to(self.device, dtype)
        self.segment_ids = segment_ids.to(self.device)

    def slow_step(self) -> torch.Tensor:
        """Seed 003's per-segment loop; returns the sorted kept global indices."""
        k = self.config.keep_per_segment
        features, seg = self.features, self.segment_ids
        with region("quality"):
            quality = token_quality(features, seg)
            normed = F.normalize(features, dim=-1)
        kept = [torch.where(seg < 0)[0]]
        for seg_id in torch.unique(seg).tolist():
            if seg_id < 0:
                continue
            with region("segment_indices"):
                idx = torch.where(seg == seg_id)[0]  # one host sync per segment
            with region("kernel"):
                q = quality[idx]
                kernel = q.unsqueeze(1) * (normed[idx] @ normed[idx].t()) * q.unsqueeze(0)
                kernel.diagonal().copy_(q * q)  # cosine self-similarity is exactly 1
            with region("greedy_dpp"):
                kept.append(idx[greedy_dpp_plain(kernel, k)])
        return torch.sort(torch.cat(kept)).values

    def fast_step(self) -> torch.Tensor:
        """One batched call of torchdoctor.ops.select_tokens_per_segment."""
        from torchdoctor.ops import select_tokens_per_segment

        with region("quality"):
            quality = token_quality(self.features, self.segment_ids)
        with region("select_tokens_per_segment"):  # normalizes the image tokens itself
            return select_tokens_per_segment(
                self.features,
                self.segment_ids,
                keep_per_segment=self.config.keep_per_segment,
                quality=quality,
                method="dpp",
            )

    def comparisons(self):
        return [
            ("slow vs fast", self.slow_step, self.fast_step),
            ("fast vs its kernel-construction floor", self.fast_step, self.kernel_floor_step),
        ]

    def kernel_floor_step(self) -> torch.Tensor:
        """The floor a batched selection cannot beat: the relevance scores (both variants compute
        them) and the conditional kernels ``diag(q) S diag(q)`` of all frames built the cheapest
        way (one batched matmul of the raw tokens, the compute-bound part, then the cosine and
        quality weights applied to the small (frames, L, L) result in place)."""
        cfg = self.config
        quality = token_quality(self.features, self.segment_ids)[cfg.text_tokens :]
        img = self.features[cfg.text_tokens :].reshape(cfg.frames, cfg.tokens_per_frame, cfg.dim)
        kernels = torch.bmm(img, img.transpose(1, 2))
        scale = quality.view(cfg.frames, -1) / kernels.diagonal(dim1=1, dim2=2).sqrt()
        return kernels.mul_(scale.unsqueeze(2)).mul_(scale.unsqueeze(1))

    def check_equivalence(self) -> EquivalenceReport:
        """The fast variant must keep exactly the slow variant's token indices."""
        report = EquivalenceReport(self.name)
        slow, fast = self.slow_step(), self.fast_step()
        same = slow.shape == fast.shape and bool(torch.equal(slow.cpu(), fast.cpu()))
        expected = self.config.frames * self.config.keep_per_segment + self.config.text_tokens
        report.add(
            "kept indices identical",
            same,
            detail=f"{slow.numel()} kept (slow), {fast.numel()} kept (fast), expected {expected}",
        )
        if not same:
            overlap = len(set(slow.tolist()) & set(fast.tolist())) / max(1, slow.numel())
            report.add("overlap of kept sets", None, overlap)
        return report

"""Rule ``train-inference-ratio``: a training step >= 20x slower than inference (seed 000).

A training step (forward + backward + optimizer) normally costs about 3 forwards. A ratio of 20
or more says the step spends most of its time in training-only work: losses with mining,
covariances, per-sample matching, CPU round trips. The saving bound assumes the step can get
back to the typical ratio; it is an upper bound, hence low confidence.

Example:
    >>> train_inference_ratio({"inference": None})
    []
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import TYPICAL_TRAIN_INFERENCE_RATIO, Advice
from torchdoctor.session_read import fmt_ms

RATIO = 20.0


def train_inference_ratio(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when the measured train/inference time ratio is >= 20.

    Example:
        >>> inf = {"train_step_ms": 220.0, "inference_ms": 1.0, "train_inference_ratio": 220.0}
        >>> train_inference_ratio({"inference": inf})[0].estimated_saving_ms
        217.0
    """
    info = session.get("inference") or {}
    train = info.get("train_step_ms")
    inference = info.get("inference_ms")
    ratio = info.get("train_inference_ratio")
    if not isinstance(ratio, (int, float)) and train and inference:
        ratio = train / inference
    if not isinstance(ratio, (int, float)) or ratio < RATIO:
        return []
    evidence = [f"a training step is {ratio:.0f}x an inference call"]
    saving = None
    if isinstance(train, (int, float)) and isinstance(inference, (int, float)):
        evidence[0] += f" ({fmt_ms(train)} vs {fmt_ms(inference)})"
        saving = max(0.0, train - TYPICAL_TRAIN_INFERENCE_RATIO * inference)
        evidence.append(
            f"a step is typically ~{TYPICAL_TRAIN_INFERENCE_RATIO:g}x inference; "
            "the saving is the bound if that ratio were reached"
        )
    bf = info.get("backward_forward_ratio")
    if isinstance(bf, (int, float)):
        evidence.append(f"backward / forward = {bf:.1f}")
    return [
        Advice(
            rule="train-inference-ratio",
            title=f"Training is {ratio:.0f}x slower than inference: the time is in "
            "training-only work",
            estimated_saving_ms=saving,
            saving_range_ms=None if saving is None else [0.0, saving],
            confidence="low",
            evidence=evidence,
            fix="Look at losses, mining and matching in the tree: vectorize distances "
            "(one Cholesky per sample, whiten once), two-stage negative mining (cosine top-M "
            "then exact), detach and cache part selection/matching for a few steps.",
            references=["torchdoctor.ops", "seed 000"],
            heat=1.0 - TYPICAL_TRAIN_INFERENCE_RATIO / ratio,
        )
    ]

"""Training-loop parts: lazy metrics, health checks, SDM loss and schedules, samplers, memory.

Example:
    >>> import torch
    >>> from torchdoctor.train import LazyMetrics, sdm_loss
    >>> metrics = LazyMetrics()
    >>> metrics.update(loss=torch.tensor(0.25))
    >>> metrics.compute()
    {'loss': 0.25}
"""

from __future__ import annotations

from torchdoctor.train.health import HealthError, HealthMonitor, HealthWarning
from torchdoctor.train.health_checks import (
    Alarm,
    Condition,
    Finite,
    MovingAverage,
    Threshold,
    Trend,
    parse_check,
)
from torchdoctor.train.memory import CrossBatchMemory, MemoryGallery
from torchdoctor.train.metrics import LazyMetrics
from torchdoctor.train.param_groups import param_groups
from torchdoctor.train.sampler import BatchReport, ModalityAwarePKSampler, pair_coverage
from torchdoctor.train.schedules import WeightSchedule
from torchdoctor.train.sdm import sdm_loss

__all__ = [
    "Alarm",
    "Condition",
    "Finite",
    "HealthError",
    "HealthMonitor",
    "HealthWarning",
    "MovingAverage",
    "Threshold",
    "Trend",
    "parse_check",
    "BatchReport",
    "ModalityAwarePKSampler",
    "pair_coverage",
    "CrossBatchMemory",
    "LazyMetrics",
    "MemoryGallery",
    "WeightSchedule",
    "param_groups",
    "sdm_loss",
]

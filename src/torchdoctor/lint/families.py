"""Every rule family, one visitor class each (the runner walks them; docs list their codes)."""

from __future__ import annotations

from torchdoctor.lint.rules_data import DataRules
from torchdoctor.lint.rules_inference import InferenceRules
from torchdoctor.lint.rules_linalg import LinalgRules
from torchdoctor.lint.rules_loops import LoopRules
from torchdoctor.lint.rules_precision import PrecisionRules
from torchdoctor.lint.rules_sync import SyncRules

FAMILIES: tuple[type, ...] = (
    LinalgRules,
    SyncRules,
    LoopRules,
    DataRules,
    PrecisionRules,
    InferenceRules,
)

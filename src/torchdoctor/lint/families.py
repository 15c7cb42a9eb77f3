"""Every rule family, one visitor class each (the runner walks them; docs list their codes)."""

from __future__ import annotations

from torchdoctor.lint.rules_activation import ActivationRules
from torchdoctor.lint.rules_attention import AttentionRules
from torchdoctor.lint.rules_batch_loop import BatchLoopRules
from torchdoctor.lint.rules_cat_growth import CatGrowthRules
from torchdoctor.lint.rules_checkpoint import CheckpointRules
from torchdoctor.lint.rules_constants import ConstantRules
from torchdoctor.lint.rules_data import DataRules
from torchdoctor.lint.rules_dataset import DatasetRules
from torchdoctor.lint.rules_decode import DecodeRules
from torchdoctor.lint.rules_device import DeviceRules
from torchdoctor.lint.rules_dynamic_shape import DynamicShapeRules
from torchdoctor.lint.rules_framework import FrameworkRules
from torchdoctor.lint.rules_graph_attention import GraphAttentionRules
from torchdoctor.lint.rules_history import HistoryRules
from torchdoctor.lint.rules_inference import InferenceRules
from torchdoctor.lint.rules_jacobian import JacobianRules
from torchdoctor.lint.rules_linalg import LinalgRules
from torchdoctor.lint.rules_load_in_loop import LoadInLoopRules
from torchdoctor.lint.rules_loops import LoopRules
from torchdoctor.lint.rules_model import ModelRules
from torchdoctor.lint.rules_module_per_call import ModulePerCallRules
from torchdoctor.lint.rules_param_update import ParamUpdateRules
from torchdoctor.lint.rules_periodic import PeriodicReadRules
from torchdoctor.lint.rules_precision import PrecisionRules
from torchdoctor.lint.rules_sigmoid_bce import SigmoidBceRules
from torchdoctor.lint.rules_slice_loop import SliceLoopRules
from torchdoctor.lint.rules_softmax import SoftmaxRules
from torchdoctor.lint.rules_step_habits import StepHabitRules
from torchdoctor.lint.rules_sync import SyncRules
from torchdoctor.lint.rules_topk import TopKRules
from torchdoctor.lint.rules_training import TrainingRules

FAMILIES: tuple[type, ...] = (
    LinalgRules,
    JacobianRules,
    SyncRules,
    DynamicShapeRules,
    LoopRules,
    BatchLoopRules,
    ParamUpdateRules,
    CatGrowthRules,
    SliceLoopRules,
    DataRules,
    DatasetRules,
    PrecisionRules,
    InferenceRules,
    DecodeRules,
    LoadInLoopRules,
    DeviceRules,
    ConstantRules,
    ModelRules,
    AttentionRules,
    ModulePerCallRules,
    ActivationRules,
    SoftmaxRules,
    GraphAttentionRules,
    SigmoidBceRules,
    TopKRules,
    TrainingRules,
    StepHabitRules,
    HistoryRules,
    CheckpointRules,
    PeriodicReadRules,
    FrameworkRules,
)

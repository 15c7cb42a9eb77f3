"""The Advice record, the stated speedups of remedies, and the read-only Session helpers rules use.

Every estimated saving is Amdahl's law over a *measured* fraction of the step and a *stated*
expected speedup of the remedy (:data:`SPEEDUPS`, documented in ``docs/advice-rules.md``):
``saving = step_ms * fraction * (1 - 1 / speedup)``. A rule that cannot measure the affected
part leaves ``estimated_saving_ms`` as ``None`` rather than inventing a number.

Example:
    >>> amdahl_saving(100.0, 0.5, 2.0)
    25.0
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# The session-reading helpers live in torchdoctor.session_read (their one definition); the
# rules import them from here too, beside Advice and pct.
from torchdoctor.session_read import (  # noqa: F401 (re-exported for the rules)
    PHASES,
    center,
    fmt_count,
    fmt_ms,
    median,
    node_ms,
    quantile,
    saving_step_ms,
    step_ms,
    tree_step_ms,
    walk,
)

CONFIDENCES = ("high", "medium", "low")

#: what a matrix multiply's fix adds on a CPU run where the CPU computes bfloat16 in hardware
#: (``environment.bf16_native``): autocast pays off there too (measured by a user's run)
CPU_BF16_NOTE = (
    " This CPU computes bfloat16 in hardware (AVX512-BF16 / AMX): under "
    "torch.autocast('cpu', dtype=torch.bfloat16) the multiply runs in bfloat16 here too "
    "(pytorch/examples mnist_forward_forward's 10,000 x 784 x 500 multiply on such a CPU: "
    "74 ms in float32, 25 ms under CPU autocast)."
)


@dataclass(frozen=True)
class Speedup:
    """An expected speedup range of a remedy on the part it applies to, with where it comes from.

    Example:
        >>> Speedup(1.2, 1.5, "torch.compile docs").low
        1.2
    """

    low: float
    high: float
    source: str


#: remedy -> expected speedup of the affected part. Savings use ``low`` (conservative); the
#: range is shown to the reader. Sources are cited in docs/advice-rules.md.
#: what every torch.compile remedy adds: the cost that the stated speedup leaves out
COMPILE_CAVEAT = (
    " Compiling takes seconds to minutes before the first step, and again for each new input "
    "shape (pad batches to a few fixed lengths, or torch.compile(model, dynamic=True)): it pays "
    "off on long runs (a 60-step Hugging Face ViT fine-tune on a CPU went from 9 s to 38 s "
    "compiled); `torchdoctor tune` measures the gain and the compile time on your step."
)


def with_compile_caveat(found: list[Any]) -> list[Any]:
    """``found`` with :data:`COMPILE_CAVEAT` added to each advice whose remedy is
    torch.compile (once): its stated speedup leaves the compile time out.

    Example:
        >>> item = Advice(rule="r", title="t", fix="Measure it: torchdoctor tune t.py",
        ...               cause="torch.compile")
        >>> with_compile_caveat([item])[0].fix[:48]
        'Measure it: torchdoctor tune t.py. Compiling tak'
    """
    for item in found:
        compiles = item.cause == "torch.compile" or "torch.compile(model)" in (item.code or "")
        if compiles and "compile time" not in (item.fix or ""):  # (once; a cure saying it)
            fix = (item.fix or "").rstrip()  # (a fix ending in a command gets its full stop)
            item.fix = fix + ("" if not fix or fix[-1] in ".;:!?)" else ".") + COMPILE_CAVEAT
    return found


SPEEDUPS: dict[str, Speedup] = {
    "sdpa": Speedup(1.3, 2.0, "fused scaled_dot_product_attention vs unfused attention"),
    "bf16_autocast": Speedup(1.3, 2.0, "bf16/fp16 tensor cores on matmul-bound CUDA work"),
    "tf32": Speedup(1.2, 2.0, "TF32 tensor cores for fp32 matmul/conv on Ampere or newer"),
    "channels_last": Speedup(1.05, 1.3, "channels_last convolutions (cuDNN / oneDNN)"),
    "rnn_sequence": Speedup(
        2.41, 4.11, "BENCHMARKS.md suite 'fused' (CPU): a LSTMCell loop vs nn.LSTM, 2.41x "
        "(batch 97, 1000 steps) to 4.11x (batch 16, 100 steps)"
    ),
    "cell_by_hand": Speedup(
        1.46, 1.55, "BENCHMARKS.md suite 'fused' (CPU): a hand-written GRU cell's loop vs "
        "nn.GRU, 1.46x (batch 32, 16 steps) to 1.55x (batch 64, 100 steps)"
    ),
    "fused_optimizer": Speedup(
        4.45, 6.69, "BENCHMARKS.md suite 'fused' (CPU): an AdamW step with foreach=True vs "
        "fused=True, 4.45x (40 x 256x256 parameters) to 6.69x (GPT-2 small's shapes)"
    ),
    "fused_adam": Speedup(
        3.35, 4.93, "BENCHMARKS.md suite 'fused' (CPU): an Adam step with foreach=True vs "
        "fused=True, 3.35x (40 x 256x256 parameters) to 4.93x (GPT-2 small's shapes)"
    ),
    "fused_adam_small": Speedup(
        2.23, 2.37, "BENCHMARKS.md suite 'fused' (CPU): an Adam / AdamW step on a "
        "reinforcement-learning agent's two 4-256-256-1 critics (134,658 parameters in 12 "
        "tensors) with foreach=True vs fused=True, 2.23x (AdamW) to 2.37x (Adam)"
    ),
    "fused_sgd_momentum": Speedup(
        1.84, 5.12, "BENCHMARKS.md suite 'fused' (CPU): an SGD step with momentum, "
        "foreach=True vs fused=True, 1.84x (40 x 256x256 parameters) to 5.12x (GPT-2 small's "
        "shapes)"
    ),
    "fused_adagrad": Speedup(
        2.90, 6.27, "BENCHMARKS.md suite 'fused' (CPU): an Adagrad step with foreach=True vs "
        "fused=True, 2.90x (40 x 256x256 parameters) to 6.27x (GPT-2 small's shapes)"
    ),
    "centre_tap": Speedup(
        4.46, 16.3, "BENCHMARKS.md suite 'fused' (CPU): a 3x3 convolution with padding 1 on 1x1 "
        "maps vs the 1x1 convolution of its centre weights (the same function), forward + "
        "backward, 4.46x (16 x 256 channels) to 16.3x (64 x 512: ResNet's last stage)"
    ),
    "emulated_bf16": Speedup(
        9.2, 38.8, "BENCHMARKS.md (CPU with AVX2, no AVX512-BF16/AMX): forward + backward "
        "under CPU autocast to bfloat16 vs float32, 9.2x for a Lightning CNN's step and 13.3x "
        "for a Hugging Face BERT's, 15.7x-38.8x for suite 'fused''s MLP pair"
    ),
    "distribution_validation": Speedup(
        1.17, 1.28, "BENCHMARKS.md suite 'fused' (CPU): a Categorical / Normal built, scored "
        "(log_prob, entropy) and backpropagated with validate_args=True vs False, 1.17x "
        "(Normal, 4 x 2) to 1.28x (Categorical, 4 x 2)"
    ),
    "distribution_validation_forward": Speedup(
        1.55, 2.49, "BENCHMARKS.md suite 'fused' (CPU): a Categorical / Normal built and scored "
        "(log_prob) with validate_args=True vs False, forward only (a rollout's per-action "
        "distribution), 1.55x (Normal, 1 x 2) to 2.49x (Categorical(probs), 2 actions)"
    ),
    "attention_dropout_cpu": Speedup(
        1.86, 3.84, "BENCHMARKS.md suite 'fused' (CPU): scaled_dot_product_attention with "
        "dropout_p=0.1 vs 0, forward + backward, 1.86x (8 x 12 heads x 128 tokens x 64, one "
        "thread) to 3.84x (8 x 4 x 128 x 32, two threads)"
    ),
    "compile": Speedup(1.1, 1.5, "torch.compile fusion of elementwise chains and overheads"),
    # (on a CPU the low end is no gain: a saving is stated only as "up to", see compile_on_cpu)
    "compile_cpu": Speedup(
        1.0, 1.32, "torchdoctor tune on ten CPU training steps (BENCHMARKS.md): torch.compile "
        "measured 0.55x to 1.32x, median 1.0x, half of them slower (a ViT fine-tune: 1.03x)"
    ),
    # (on a CPU the memory format's gain depends on the net's other ops: stated as "up to")
    "channels_last_cpu": Speedup(
        1.0, 1.3, "channels_last on CPU training steps of real clients (BENCHMARKS.md): 0.85x "
        "(a diffusion U-Net of GroupNorm, einsum attention and concatenated skips), 1.0x "
        "(pytorch/examples mnist), 1.16x (fast_neural_style), and a CNN whose max pooling was "
        "a quarter of its step gained a third of it"
    ),
    # (grouped and depthwise convolutions: NCHW takes a slow CPU path for them)
    "channels_last_cpu_grouped": Speedup(
        1.0, 2.4, "a grouped or depthwise convolution's forward + backward in channels_last on "
        "a CPU, batch 16 (BENCHMARKS.md): 1.05x to 2.44x, depthwise 3x3 at 28x28 2.44x, "
        "ResNeXt's 32 groups at 28x28 2.04x; torchvision's mobilenet_v3_small training step "
        "1.76x"
    ),
    # (pointwise, 1x1, convolutions: a matrix multiply over channels, strided in NCHW)
    "channels_last_cpu_pointwise": Speedup(
        1.0, 1.85, "a 1x1 convolution's forward + backward in channels_last on a CPU, batch 16 "
        "(BENCHMARKS.md): 1.04x to 1.85x (16 -> 72 channels at 56x56 1.85x, 64 -> 256 1.69x, "
        "256 -> 64 1.04x)"
    ),
    # (a CPU with bf16 units, AVX512-BF16 / AMX: its matmuls and convolutions, measured)
    "bf16_autocast_cpu": Speedup(
        1.0, 1.45, "bf16 autocast on an AMX CPU (BENCHMARKS.md): a ResNet-style conv net's "
        "step 1.30x-1.40x, timm resnet18 with --amp-dtype bfloat16 1.28x-1.33x; small or "
        "elementwise-bound steps gain nothing (the casts cost what the kernels save)"
    ),
    # (its matrix multiplies: linear layers and a hand-written attention's products)
    "bf16_autocast_cpu_matmul": Speedup(
        1.0, 3.5, "bf16 autocast on an AMX CPU: a linear layer's forward + backward at ViT-tiny's "
        "shapes (3,152 x 192 -> 768) 3.31x; facebookresearch/dino's vit_tiny training step "
        "2,329 -> 1,181 ms (1.97x, interleaved A/B); mnist_forward_forward's 10,000 x 784 x 500 "
        "multiply 74 -> 25 ms (2.96x)"
    ),
    "compile_repeated": Speedup(1.2, 1.5, "torch.compile on a stack of identical layers"),
    "halve_layers": Speedup(2.0, 2.0, "half the layers of a stack take half the time"),
    "ops_replacement": Speedup(2.0, 10.0, "torchdoctor.ops batched sync-free building blocks"),
    "dataloader_workers": Speedup(2.0, 10.0, "DataLoader workers overlap loading with compute"),
    "float32": Speedup(
        1.44, 2.23, "float64 vs float32 on this CPU (2 cores, torch 2.13): a loop of two "
        "LSTMCells over 200 steps, forward + backward, 1.44x; a 256-512-256 MLP, 2.23x"
    ),
    "on_device": Speedup(2.0, 10.0, "on-device op instead of a CPU round trip"),
    # (on the kernel time of a CPU step: its share of it that a caching allocator saves)
    "caching_allocator": Speedup(
        2.0, 16.0, "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 on real CPU "
        "clients saved 83-94% of their kernel time per step (build-nanogpt 797 -> 415 ms, llm.c's "
        "train_gpt2.py 2245 -> 1740 ms; the user time grew a little); 2x at the low end: kernel "
        "time of other causes stays"
    ),
}

#: typical backward / forward time ratio of a layer (two matmuls per forward matmul).
TYPICAL_BACKWARD_FORWARD_RATIO = 2.0
#: typical training step / inference time ratio (forward + backward + optimizer ~ 3 forwards).
TYPICAL_TRAIN_INFERENCE_RATIO = 3.0


def amdahl_saving(step_time_ms: float, fraction: float, speedup: float) -> float:
    """Time saved per step when a part taking ``fraction`` of the step gets ``speedup`` faster.

    Example:
        >>> round(amdahl_saving(200.0, 0.72, 1.5), 1)
        48.0
    """
    if speedup <= 0:
        raise ValueError(f"speedup must be positive, got {speedup}; pass e.g. 1.5 for 1.5x")
    fraction = min(max(fraction, 0.0), 1.0)
    return step_time_ms * fraction * (1.0 - 1.0 / speedup)


@dataclass
class Advice:
    """One prescription: what to change, why (measured evidence) and what it should save.

    ``priority`` is assigned by :func:`torchdoctor.analyze.advice.advise` (1 = do first).
    ``saving_range_ms`` is the range implied by the remedy's stated speedup range; ``heat``
    (0..1, the measured share of the step where the evidence lives) orders advice whose saving
    cannot be estimated. ``code`` is an optional before/after snippet for reports.
    ``location`` (``{"file", "line"}``) names the one source line the advice is about, when it
    is about one: advice on the same line can be merged by it.

    Example:
        >>> a = Advice("dominant-module", "Speed up decoder", estimated_saving_ms=12.0)
        >>> a.to_dict()["rule"]
        'dominant-module'
    """

    rule: str
    title: str
    priority: int = 0
    estimated_saving_ms: float | None = None
    estimated_saving_pct: float | None = None
    confidence: str = "medium"
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    references: list[str] = field(default_factory=list)
    saving_range_ms: list[float] | None = None
    heat: float = 0.0
    code: str | None = None
    #: ``file:line`` of each source line the advice is about; entries naming the same line
    #: merge into one (see :mod:`torchdoctor.analyze.advice.merge`)
    locations: list[str] = field(default_factory=list)
    #: the remedy it prescribes when several rules can find it (``"torch.compile"``,
    #: ``"dataloader-workers"``): entries with the same cause merge into one
    cause: str | None = None
    #: a generic engine knob whose gain is a stated range, not measured on the user's code:
    #: ranks after every measured finding
    generic: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, the ``Advice`` shape of docs/session-schema.md (plus extras)."""
        return asdict(self)


def sync_heat(per_step: float) -> float:
    """How hot host syncs are without a measured stall: 0.05 per sync per step, at most 0.5
    (every rule weighing syncs uses this one scale, so their advice ranks consistently).

    Example:
        >>> sync_heat(1.0), sync_heat(40.0)
        (0.05, 0.5)
    """
    return min(0.5, 0.05 * max(float(per_step), 0.0))


#: at most what one host sync costs a CUDA step when its stall was not measured: after the
#: sync returns the device idles until the host queues work again (the Python between the sync
#: and the next kernel launch, usually tens of microseconds); 1 ms is a generous bound
SYNC_COST_BOUND_MS = 1.0
#: syncs whose bounded cost is under this share of the step get no advice of their own (they
#: stay in the sync table): 20 reads in a 37 s LBFGS step are nobody's bottleneck
NEGLIGIBLE_SYNC_SHARE = 0.01


def negligible_syncs(per_step: float, step: float) -> bool:
    """True when ``per_step`` unmeasured syncs cost under 1% of a ``step`` ms step even at
    :data:`SYNC_COST_BOUND_MS` each (every rule weighing syncs drops such advice the same way).

    Example:
        >>> negligible_syncs(20, 37_000.0), negligible_syncs(1, 15.0), negligible_syncs(1, 0.0)
        (True, False, False)
    """
    return step > 0 and max(float(per_step), 0.0) * SYNC_COST_BOUND_MS < (
        NEGLIGIBLE_SYNC_SHARE * step
    )


#: the stated speedups that are torch.compile's (on a CPU: :func:`compile_on_cpu`)
COMPILE_SPEEDUPS = frozenset({"compile", "compile_repeated"})


def compile_on_cpu(advice: Advice, step_time_ms: float, fraction: float,
                   speedup_key: str = "compile_cpu") -> Advice:
    """A remedy whose CPU gain ranges from a loss to a gain (torch.compile; channels_last:
    ``speedup_key``): no saving stated, only its bound ("up to", at the high end of
    ``SPEEDUPS[speedup_key]``), ranked by its share; the evidence says why.

    Example:
        >>> a = compile_on_cpu(Advice("r", "t"), 100.0, 0.5)
        >>> a.estimated_saving_ms, [round(x, 1) for x in a.saving_range_ms], a.heat
        (None, [0.0, 12.1], 0.5)
    """
    speedup = SPEEDUPS[speedup_key]
    advice.estimated_saving_ms = None
    advice.saving_range_ms = [0.0, amdahl_saving(step_time_ms, fraction, speedup.high)]
    advice.heat = max(advice.heat, min(max(fraction, 0.0), 1.0))
    cited = any(speedup.source in line for line in advice.evidence)
    advice.evidence.append(
        "on a CPU its gain is uncertain, so none is stated"
        + ("" if cited else f": {speedup.source}") + "; measure it on your step with "
        "torchdoctor tune"
    )
    return advice


def with_saving(advice: Advice, step_time_ms: float, fraction: float, speedup: Speedup) -> Advice:
    """Fill an Advice's saving (Amdahl at the low end) and its range from a Speedup.

    Example:
        >>> a = with_saving(Advice("r", "t"), 100.0, 0.5, Speedup(2.0, 4.0, "x"))
        >>> a.estimated_saving_ms, a.saving_range_ms
        (25.0, [25.0, 37.5])
    """
    advice.estimated_saving_ms = amdahl_saving(step_time_ms, fraction, speedup.low)
    advice.saving_range_ms = [
        advice.estimated_saving_ms,
        amdahl_saving(step_time_ms, fraction, speedup.high),
    ]
    advice.heat = max(advice.heat, min(max(fraction, 0.0), 1.0))
    return advice


# -- read-only Session helpers ------------------------------------------------------------


def is_cuda(session: Mapping[str, Any]) -> bool:
    """Whether the session ran on a CUDA device.

    Example:
        >>> is_cuda({"environment": {"device": "cuda:0 NVIDIA H200"}})
        True
    """
    device = str((session.get("environment") or {}).get("device") or "")
    return device.startswith("cuda")


def one_step_run(session: Mapping[str, Any]) -> bool:
    """No step boundary was seen: the whole run is one step (a one-shot inference script).
    Its lines outside the model (imports, loading, saving the output) run once, so the
    per-step remedies (every N steps, out of the loop) do not apply; the reports show them.

    Example:
        >>> one_step_run({"config": {"step_boundary": "whole_run"}}), one_step_run({})
        (True, False)
    """
    return (session.get("config") or {}).get("step_boundary") == "whole_run"


def numbering_note(session: Mapping[str, Any]) -> str:
    """How the report numbers steps, when that is not the script's own count: from the first
    profiled step, after the warm-up ones (build-nanogpt evaluated at its steps 20 and 39,
    reported as steps 19 and 38).

    Example:
        >>> numbering_note({"config": {"warmup": 1}}), numbering_note({"config": {"warmup": 0}})
        ('; steps are numbered from 0 after 1 warm-up step', '')
    """
    warmup = int((session.get("config") or {}).get("warmup") or 0)
    if warmup <= 0:
        return ""
    return f"; steps are numbered from 0 after {warmup} warm-up step{'s' if warmup > 1 else ''}"


def same_file(a: str | None, b: str | None) -> bool:
    """Whether two paths name the same source file (one may be relative to the other).

    Example:
        >>> same_file("/home/me/proj/train.py", "proj/train.py")
        True
    """
    if not a or not b:
        return False
    a_norm, b_norm = os.path.normpath(a), os.path.normpath(b)
    if a_norm == b_norm:
        return True
    longer, shorter = (a_norm, b_norm) if len(a_norm) >= len(b_norm) else (b_norm, a_norm)
    return longer.endswith(os.sep + shorter.lstrip(os.sep)) and not os.path.isabs(shorter)


def location(file: Any, line: Any) -> str:
    """The ``file:line`` of an advice's ``locations`` (the file as recorded).

    Example:
        >>> location("/src/train.py", 12)
        '/src/train.py:12'
    """
    return f"{file or '?'}:{line if line is not None else '?'}"


def split_location(text: str) -> tuple[str, int | None]:
    """``(file, line)`` of a ``file:line`` string (line None when it is not a number).

    Example:
        >>> split_location("/src/train.py:12")
        ('/src/train.py', 12)
    """
    file, _, line = str(text).rpartition(":")
    return (file, int(line)) if line.isdigit() else (str(text), None)


def pct(part: float, whole: float) -> float:
    """``part`` as a percentage of ``whole`` (0 when whole is 0).

    Example:
        >>> pct(1, 4)
        25.0
    """
    return 100.0 * part / whole if whole > 0 else 0.0


def unattributed_ms(session: Mapping[str, Any]) -> float:
    """Forward + backward time of the root's ``(self)`` entry: work no module or region claims.

    Example:
        >>> rest = {"kind": "self", "forward_ms": {"median": 2.0}, "backward_ms": {"median": 1.0}}
        >>> unattributed_ms({"tree": {"kind": "root", "children": [rest]}})
        3.0
    """
    tree = session.get("tree") or {}
    for child in tree.get("children") or ():
        if child.get("kind") == "self":
            return center(child.get("forward_ms")) + center(child.get("backward_ms"))
    return 0.0


def advice_step_ms(session: Mapping[str, Any]) -> float:
    """The step an advice's saving is a share of: :func:`saving_step_ms`, or the run's mean
    step when periodic work makes that longer (a rollout every 32 steps: 11 ms per step on
    average over a 4 ms median).

    Example:
        >>> advice_step_ms({"step_ms": {"mean": 11.0, "median": 4.0}})
        11.0
    """
    return max(saving_step_ms(session), center(session.get("step_ms")))

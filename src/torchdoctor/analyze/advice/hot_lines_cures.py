"""What cures a hot line, and how much faster the cure measured in BENCHMARKS.md.

A cure is chosen from the static findings on the line (their code), else from the library
call the line makes (Lightning's ``self.log``), else from the heaviest torch op the line runs
many times per step, else, for a line executed many times per step
with small ops, the generic per-element loop cure (batch it). Speedups are the benchmarked
ratios of the replacement against the slow pattern (low end: the conservative figure, used for
the saving; high end: the best measured), with the table they come from.

Example:
    >>> cure_for({"top_ops": [{"op": "torch.linalg.solve", "calls_per_step": 64}],
    ...           "calls_per_step": 64, "torch_calls_per_step": 320}, []).name
    'whitening'
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.base import SPEEDUPS, Speedup, center
from torchdoctor.analyze.advice.chain_cure import fuse_cure
from torchdoctor.analyze.advice.compiled_lines import compiled_code
from torchdoctor.analyze.advice.cure import Cure
from torchdoctor.analyze.advice.graph_cure import GRAPH_ATTENTION
from torchdoctor.analyze.advice.init_cure import build_once_cure
from torchdoctor.analyze.advice.jacobian_cure import JACOBIAN_ROWS
from torchdoctor.analyze.advice.slice_cure import unbind_cure
from torchdoctor.analyze.advice.topk_cure import TOPK

#: a line executed at least this many times per step is a loop
LOOP_CALLS = 8
#: ... and a per-element Python loop when its torch calls average under this many ms
SMALL_OP_MS = 0.5


WHITENING = Cure(
    "whitening",
    "factor the matrix once and whiten (torchdoctor.ops)",
    "Factor the loop-invariant matrix once (torchdoctor.ops.cholesky_factor) and whiten all "
    "vectors in one batched call (torchdoctor.ops.whiten, or pairwise_mahalanobis / "
    "mahalanobis_to_candidates for distances) instead of one solve per element.",
    Speedup(
        3.22,
        276.5,
        "BENCHMARKS.md: harness 'solve' loop vs batched 3.22x; ops 'per-pair "
        "solve loop (seed 000)' vs whitened 277x",
    ),
    ("TD102", "torchdoctor.ops.cholesky_factor", "torchdoctor.ops.whiten"),
    "for i in range(n):                                   # before: one solve per element\n"
    "    total += z[i] @ torch.linalg.solve(cov, z[i])\n"
    "from torchdoctor.ops import cholesky_factor, whiten  # after: one factorization\n"
    "chol, _ = cholesky_factor(cov)\n"
    "total = whiten(z, chol).pow(2).sum()",
)
BATCHED_LINALG = Cure(
    "batched_linalg",
    "one batched linalg call instead of one per matrix",
    "Stack the matrices the loop walks into one (B, n, n) tensor and make one call: "
    "torch.linalg factorizations, solves, inverses and determinants take batches, so one "
    "kernel replaces B launches and the Python loop around them.",
    Speedup(
        2.40,
        3.35,
        "BENCHMARKS.md: harness 'solve: 256 SPD 64x64' (one matrix per image), the loop vs one "
        "batched call, interquartile 2.40x to 3.35x (median 3.22x) on a CPU",
    ),
    ("TD103",),
    "for b in range(covs.shape[0]):                # before: one kernel per matrix\n"
    "    L = torch.linalg.cholesky(covs[b])\n"
    "L = torch.linalg.cholesky(covs)              # after: covs is (B, n, n)",
)
INVERSE = Cure(
    "whitening",
    "replace the explicit inverse by a Cholesky factor and whitening (torchdoctor.ops)",
    "Factor once with torchdoctor.ops.cholesky_factor and apply it with torchdoctor.ops.whiten "
    "(or torch.cholesky_solve) instead of forming the inverse.",
    Speedup(
        1.68,
        4.59,
        "BENCHMARKS.md: Mahalanobis, explicit inverse vs whitened 1.68x (pool "
        "252) to 4.59x (pool 8192)",
    ),
    ("TD101", "torchdoctor.ops.cholesky_factor", "torchdoctor.ops.whiten"),
)
SEGMENTS = Cure(
    "group_by_segment",
    "group all values in one pass (torchdoctor.ops.group_by_segment)",
    "Sort once and split with torchdoctor.ops.group_by_segment (or pad_segments) instead of "
    "building a mask per value.",
    Speedup(
        4.48, 6.67,  # fmt: skip
        "BENCHMARKS.md: select_tokens_per_segment vs seed 003's per-frame loop 4.48x-6.67x",
    ),
    ("TD301", "torchdoctor.ops.group_by_segment"),
)
REMAP = Cure(
    "remap_labels",
    "remap labels on the device (torchdoctor.ops.remap_labels)",
    "Use torchdoctor.ops.remap_labels (torch.unique(return_inverse=True)) instead of a Python "
    "dict built from .tolist().",
    Speedup(27.0, 44.1, "BENCHMARKS.md: harness 'label remap' 44.1x (spread 27.0-58.0)"),
    ("TD302", "torchdoctor.ops.remap_labels"),
)
ASSIGNMENT = Cure(
    "linear_assignment",
    "solve all assignments in one batched call (torchdoctor.ops.linear_assignment)",
    "Use torchdoctor.ops.linear_assignment on the batched cost tensor instead of scipy per "
    "problem on host copies.",
    Speedup(4.98, 14.1, "BENCHMARKS.md: linear_assignment vs per-problem scipy loop 4.98x-14.1x"),
    ("TD303", "torchdoctor.ops.linear_assignment"),
)
PER_ELEMENT_LOOP = Cure(
    "batch the loop",
    "a per-element Python loop: batch it",
    "Replace the Python loop by one batched tensor op over all elements (index with tensors, "
    "broadcast, torch.vmap), or compile the function with torch.compile.",
    Speedup(
        3.22,
        44.1,
        "BENCHMARKS.md harness: slow loop vs batched cure 3.22x (solve) to 44.1x (label remap)",
    ),
    ("torch.vmap", "torch.compile"),
)

FOREACH = Cure(
    "foreach",
    "update all parameters in a few multi-tensor kernels (torch._foreach_*)",
    "Replace the Python loop over parameters with the multi-tensor ops: "
    "torch._foreach_add_(params, grads, alpha=-lr) for a hand-written SGD step, "
    "torch._foreach_lerp_(ema_params, params, 1 - decay) for an EMA (or "
    "torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn), torch.optim with "
    "foreach=True / fused=True for the rest.",
    Speedup(
        1.08,
        5.47,
        "BENCHMARKS.md suite 'fused': per-parameter loop vs torch._foreach on 100 parameters "
        "(CPU), 1.08x (SGD, 512x512 weights) to 5.47x (EMA, 64x64 weights)",
    ),
    ("TD305", "torch._foreach_add_", "torch._foreach_lerp_"),
    "for p in model.parameters():                                   # before\n"
    "    p.data.add_(p.grad, alpha=-lr)\n"
    "params = [p for p in model.parameters() if p.grad is not None]  # after\n"
    "torch._foreach_add_(params, [p.grad for p in params], alpha=-lr)",
)

_FUSED = "BENCHMARKS.md suite 'fused' (CPU, forward + backward, interleaved): "
FUSED_ACTIVATION = Cure(
    "fused activation",
    "call torch's fused activation instead of composing it from elementwise ops",
    "Replace the hand-written formula by its fused kernel: F.gelu(x, approximate='tanh') for "
    "the tanh GELU (0.044715 x^3), F.gelu(x) for the erf GELU, F.silu(x) for x * sigmoid(x), "
    "F.softplus(x) for log1p(exp(x)), F.logsigmoid(x) for log(sigmoid(x)); the same function "
    "up to float rounding (softplus and log-sigmoid without the overflow), one kernel forward "
    "and backward instead of one per operator, and no intermediates saved for the backward.",
    Speedup(1.11, 3.06, _FUSED + "softplus 1.11x (small) to erf GELU 3.06x (8x256x3072)"),
    ("TD508", "torch.nn.functional.gelu", "torch.nn.functional.silu",
     "torch.nn.functional.softplus"),
    "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))"
    "  # before\nreturn F.gelu(x, approximate='tanh')  # after",
)
#: each hand-written activation's own pair in the suite (the finding names it: "hand-written
#: tanh GELU (...)"); one not benchmarked (log-sigmoid) keeps the span of all of them
ACTIVATION_SPEEDUPS: dict[str, Speedup] = {
    "tanh GELU": Speedup(1.72, 2.85, _FUSED + "tanh GELU 1.72x (4x64x192) to 2.85x (8x256x3072)"),
    "erf GELU": Speedup(1.54, 3.06, _FUSED + "erf GELU 1.54x (4x64x192) to 3.06x (8x256x3072)"),
    "SiLU": Speedup(1.24, 1.96, _FUSED + "SiLU 1.24x (4x64x192) to 1.96x (8x256x3072)"),
    "softplus": Speedup(1.11, 1.47, _FUSED + "softplus 1.11x (4x64x192) to 1.47x (8x256x3072)"),
}
FUSED_ATTENTION = Cure(
    "scaled_dot_product_attention",
    "compute attention with F.scaled_dot_product_attention",
    "Replace softmax(q @ k^T * scale + mask) @ v by F.scaled_dot_product_attention(q, k, v, "
    "attn_mask=..., is_causal=..., dropout_p=...): one fused kernel (flash or memory-efficient "
    "on CUDA) that never materializes the T x T weights.",
    Speedup(1.42, 1.97, _FUSED + "causal attention 1.42x (8x12x256x64) to 1.97x (4x4x64x16)"),
    ("TD507", "torch.nn.functional.scaled_dot_product_attention"),
    "att = F.softmax((q @ k.transpose(-2, -1)) * scale + mask, dim=-1); y = att @ v  # before\n"
    "y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # after",
    cause="sdpa",  # as the dominant-module remedy for hand-written attention
)

LOGITS_BCE = Cure(
    "binary_cross_entropy_with_logits",
    "drop the sigmoid and pass the logits to F.binary_cross_entropy_with_logits",
    "The loss takes probabilities made by a sigmoid: remove that sigmoid (the model's last "
    "layer, or where it is applied before the loss) and call "
    "F.binary_cross_entropy_with_logits(logits, target) or nn.BCEWithLogitsLoss on the logits "
    "(apply torch.sigmoid only where probabilities are read: samples, saved images, metrics). "
    "One fused kernel for the sigmoid and the loss, forward and backward; stable where the "
    "sigmoid saturates (binary_cross_entropy clamps its log at -100); and allowed under CUDA "
    "autocast, where F.binary_cross_entropy raises.",
    Speedup(
        2.80, 3.34,  # fmt: skip
        _FUSED + "sigmoid + binary_cross_entropy vs binary_cross_entropy_with_logits 2.80x "
        "(128x784, the pytorch/examples VAE's loss) to 3.34x (64x3x64x64)",
    ),
    ("TD510", "torch.nn.functional.binary_cross_entropy_with_logits"),
    "return torch.sigmoid(self.fc4(h3))                        # before: the model's output\n"
    "loss = F.binary_cross_entropy(recon, x, reduction='sum')\n"
    "return self.fc4(h3)                                       # after: logits\n"
    "loss = F.binary_cross_entropy_with_logits(logits, x, reduction='sum')",
)
#: the op variants (the hot-lines collector's ``op[variant]`` names) whose cure is known: the
#: line's top ops holding at least half of its time
CURES_BY_VARIANT: dict[str, Cure] = {"[sigmoid]": LOGITS_BCE}

#: logging 1 step in LOG_EVERY removes (LOG_EVERY - 1) / LOG_EVERY of the line's time
LOG_EVERY = 10
LIGHTNING_LOG = Cure(
    "log less often",
    "Lightning's self.log machinery runs at every call: log per epoch, or every N steps",
    "Each self.log/self.log_dict call runs Lightning's result collection (clones, device "
    "moves, torchmetrics updates) and, with prog_bar=True, a host read per metric: log "
    "per-step metrics with on_step=False, on_epoch=True (accumulated, logged once per "
    "epoch), or only every N steps (Trainer(log_every_n_steps=N) does not skip the call "
    "itself: guard it with `if batch_idx % N == 0`).",
    Speedup(
        float(LOG_EVERY),
        float(LOG_EVERY),
        f"arithmetic: logging 1 step in {LOG_EVERY} keeps 1/{LOG_EVERY} of the line's measured "
        "time",
    ),
    ("lightning.pytorch.core.LightningModule.log",),
    'self.log_dict({"ld": ld, "lg": lg}, prog_bar=True)          # before: every step\n'
    "if batch_idx % 10 == 0:                                     # after\n"
    '    self.log_dict({"ld": ld, "lg": lg}, prog_bar=True)',
)
#: lines whose cure follows from the call they make into a library: (text in the line's
#: code, packages one of its library frames is in, the cure)
CURES_BY_CALL: tuple[tuple[tuple[str, ...], tuple[str, ...], Cure], ...] = (
    (("self.log(", "self.log_dict("), ("lightning", "pytorch_lightning", "torchmetrics"),
     LIGHTNING_LOG),
)  # fmt: skip

PERIODIC_RESULT = Cure(
    "compute where it is read",
    "compute it inside the `if` that reads it",
    "Move the computation into the `if step % N == 0:` block that reads its result: the other "
    "N - 1 steps skip it (an evaluation of the train and validation masks printed every 20 "
    "epochs runs 20 times less often).",
    Speedup(
        2.0,
        20.0,
        "a result read every N >= 2 steps is computed N times less often; pytorch/examples "
        "GCN and GAT read theirs every 20 epochs",
    ),
    ("TD712",),
    "loss_val, acc_val = test(model, x, y, mask_val)  # before: every epoch\n"
    "if epoch % print_every == 0:\n"
    "    print(epoch, loss_val, acc_val)\n"
    "if epoch % print_every == 0:                      # after: when it is printed\n"
    "    loss_val, acc_val = test(model, x, y, mask_val)\n"
    "    print(epoch, loss_val, acc_val)",
    basis="expected",
)

INVARIANT_CALL = Cure(
    "compute it once before the loop",
    "run the call once per loop, not once per step",
    "Compute it once before the loop and pass the result to every step: its arguments do not "
    "change inside the loop (seed 001's diffusion policy re-ran its encoder at every "
    "denoising step; a greedy decoder that re-encodes its source at every token).",
    Speedup(
        2.0,
        20.0,
        "a call repeated on the same inputs at every step of an n-step loop runs once: n times "
        "less often (n >= 2; 95% of its time at most)",
    ),
    ("TD601",),
    "for t in scheduler.timesteps:          # before: the encoder at every step\n"
    "    cond = model.encoder(obs)\n"
    "    x = model.denoise(x, t, cond)\n"
    "cond = model.encoder(obs)              # after: once\n"
    "for t in scheduler.timesteps:\n"
    "    x = model.denoise(x, t, cond)",
    basis="expected",
)

#: the cure of matrix multiplies with a sparse COO operand, one text for the hot-line and the
#: dominant-module advice (figures: ``torchdoctor.benchmarks.sparse_layouts``, BENCHMARKS.md)
SPARSE_LAYOUT_CURE = (
    "Convert a COO operand (to_sparse(), sparse_coo_tensor) once to CSR, where it is built, not "
    "per step (`adj = adj.to_sparse_csr()`): CSR's sparse x dense kernel skips COO's per-call "
    "coalescing (measured on a CPU at Cora's sizes: 10-17x faster forward). Its backward with "
    "respect to the dense operand transposes the CSR matrix, which takes part or all of the "
    "gain back (2.3x for the features x weight product, 1.0x for the adjacency x node "
    "features): time both layouts on your tensors with torch.utils.benchmark. Above a few "
    "percent density a dense tensor is often fastest."
)

CURES_BY_CODE: dict[str, Cure] = {
    "TD102": WHITENING, "TD101": INVERSE, "TD104": JACOBIAN_ROWS, "TD103": BATCHED_LINALG,
    "TD301": SEGMENTS,
    "TD302": REMAP,
    "TD303": ASSIGNMENT,
    "TD304": PER_ELEMENT_LOOP,
    "TD305": FOREACH,
    "TD507": FUSED_ATTENTION,
    "TD508": FUSED_ACTIVATION,
    "TD510": LOGITS_BCE,
    "TD512": TOPK,  # (a sort read only up to k: topk)
    "TD514": GRAPH_ATTENTION,
    "TD712": PERIODIC_RESULT,
    "TD601": INVARIANT_CALL,
}
#: ops that, run many times per step on one line, call for a cure of their own
CURES_BY_OP: dict[str, Cure] = {
    "torch.linalg.solve": WHITENING,
    "torch.linalg.solve_ex": WHITENING,
    "torch.cholesky_solve": WHITENING,
    "torch.linalg.cholesky": WHITENING,
    "torch.linalg.inv": INVERSE,
    "torch.inverse": INVERSE,
}


def saving_note(cure: Cure, lines: int = 1) -> str:
    """The evidence line saying how a cure's saving on ``lines`` measured lines is estimated.

    Example:
        >>> saving_note(WHITENING)[:39]
        "saving: Amdahl over the line's measured"
        >>> saving_note(WHITENING, lines=4).startswith("saving: Amdahl over the lines' measured")
        True
    """
    speed = cure.speedup
    whose = "the line's" if lines <= 1 else "the lines'"
    return (
        f"saving: Amdahl over {whose} measured time with the cure's {cure.basis} speedup "
        f"{speed.low:.3g}x-{speed.high:.3g}x ({speed.source})"
    )


def is_per_element_loop(row: Mapping[str, Any]) -> bool:
    """A line executed many times per step, and several times per run of its function (when
    that is known: the calls of the module whose forward it is in, or of the line that called
    its function), whose torch calls are small. A module's forward line run once per call of
    20 layers is no loop.

    Example:
        >>> is_per_element_loop({"calls_per_step": 64, "torch_calls_per_step": 320,
        ...                      "forward_ms": 3.2})
        True
        >>> is_per_element_loop({"calls_per_step": 20, "torch_calls_per_step": 20,
        ...                      "forward_ms": 1.0, "invocations_per_step": 20})
        False
    """
    calls = float(row.get("calls_per_step") or 0.0)
    invocations = float(row.get("invocations_per_step") or 0.0)
    if row.get("carried") or (invocations > 0 and calls < 2 * invocations):
        return False  # a recurrence (h = f(h)), or about once per run of its function
    torch_calls = float(row.get("torch_calls_per_step") or 0.0)
    per_call = float(row.get("forward_ms") or 0.0) / torch_calls if torch_calls else 0.0
    return calls >= LOOP_CALLS and per_call < SMALL_OP_MS


def loop_cause(row: Mapping[str, Any] | None) -> str | None:
    """The cause the advice on a measured line shares with the other lines of its per-element
    Python loop (merged into one advice), or the one its row names (the model calls under the
    line recomputed on identical inputs: ``invariant PATH``, the loop-invariant advice's), or
    None.

    Example:
        >>> loop_cause({"file": "/a/t.py", "loop_line": 12, "calls_per_step": 64,
        ...             "torch_calls_per_step": 64, "forward_ms": 0.6})
        'loop /a/t.py:12'
    """
    if row and row.get("loop_line") and is_per_element_loop(row):
        return f"loop {row['file']}:{row['loop_line']}"
    return row.get("cause") if row else None


def finding_cure(finding: Mapping[str, Any]) -> Cure | None:
    """The cure a lint finding calls for (``CURES_BY_CODE``), with the speedup of the very
    pattern it names where the suite measured it apart (a tanh GELU is not a softplus).

    Example:
        >>> finding_cure({"code": "TD508", "message": "hand-written tanh GELU (`...`)"}).speedup.low
        1.72
        >>> finding_cure({"code": "TD508", "message": "hand-written log-sigmoid"}).speedup.low
        1.11
        >>> finding_cure({"code": "TD305", "message": "... torch._foreach_lerp_(ema, ...)"}).speedup.low
        1.31
        >>> finding_cure({"code": "TD999"}) is None
        True
    """
    cure = CURES_BY_CODE.get(str(finding.get("code")))
    if cure is FOREACH:  # (an EMA's loop, told _foreach_lerp_, gains more than an SGD step's)
        ema = "_foreach_lerp_" in str(finding.get("message") or "")
        return dataclasses.replace(cure, speedup=SPEEDUPS["foreach_ema" if ema else "foreach_sgd"])
    if cure is FUSED_ATTENTION:  # (TD507's message says the form: unmasked, channels first)
        message = str(finding.get("message") or "")
        for words, key in (("channels first", "sdpa_channels_first"), ("no mask", "sdpa_unmasked")):
            if words in message:
                return dataclasses.replace(cure, speedup=SPEEDUPS[key])
    if cure is FUSED_ACTIVATION:
        message = str(finding.get("message") or "")
        for what, speedup in ACTIVATION_SPEEDUPS.items():
            if re.match(rf"hand-written {re.escape(what)}\b", message):
                return dataclasses.replace(cure, speedup=speedup)
    return cure


def cure_for(row: Mapping[str, Any], findings: Sequence[Mapping[str, Any]]) -> Cure | None:
    """The cure of a measured line (see the module docstring), or None.

    Example:
        >>> cure_for({}, [{"code": "TD301"}]).name  # a static finding on the line
        'group_by_segment'
        >>> cure_for({"calls_per_step": 64, "torch_calls_per_step": 320, "forward_ms": 3.2}, []).name
        'batch the loop'
        >>> cure_for({"calls_per_step": 1, "torch_calls_per_step": 1, "forward_ms": 9.0}, []) is None
        True
        >>> cure_for({"total_ms": 1.6, "top_ops": [{"op": "F.binary_cross_entropy[sigmoid]",
        ...           "forward_ms": 1.4, "backward_ms": 0.1}]}, []).name
        'binary_cross_entropy_with_logits'
        >>> cure_for({"code": "self.log('loss', loss)", "via": [{"file":
        ...     "/env/site-packages/lightning/fabric/utilities/apply_func.py"}]}, []).name
        'log less often'
    """
    for finding in findings:
        cure = finding_cure(finding)
        if cure is not None:
            return cure
    code = str(row.get("code") or "")
    via = [str(v.get("file") or "").replace("\\", "/") for v in row.get("via") or ()]
    for texts, packages, cure in CURES_BY_CALL:
        if any(t in code for t in texts) and any(
            f"/{package}/" in file for file in via for package in packages
        ):
            return cure
    for op in (row.get("top_ops") or ())[:2]:
        cure = CURES_BY_OP.get(str(op.get("op")))
        if cure is not None and float(op.get("calls_per_step") or 0.0) >= 2:
            return cure
        variant = "[" + str(op.get("op")).partition("[")[2]
        spent = float(op.get("forward_ms") or 0.0) + float(op.get("backward_ms") or 0.0)
        if variant in CURES_BY_VARIANT and spent >= 0.5 * center(row.get("total_ms")):
            return CURES_BY_VARIANT[variant]
    built = build_once_cure(row) or unbind_cure(row)
    if built is not None:
        return built
    if compiled_code(row):
        return None
    return PER_ELEMENT_LOOP if is_per_element_loop(row) else fuse_cure(row)


"""Registry of lint rules: stable codes, names, severities, and the documented fix.

Codes come in families: TD0xx the linter itself, TD1xx linear algebra, TD2xx host-device
syncs, TD3xx loops and vectorization, TD4xx data pipeline, TD5xx precision and engine, TD6xx
inference loops. A published code never changes meaning; retired codes are not reused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One lint rule as documented in docs/lint-rules.md.

    Example:
        >>> RULES["TD101"].name
        'inverse-then-multiply'
    """

    code: str
    name: str
    severity: str
    summary: str
    fix: str
    bad: str
    good: str
    replacement: str | None = None
    autofix: bool = False
    seed: str | None = None


_R = [
    Rule(
        "TD000",
        "syntax-error",
        "error",
        "the file could not be parsed; nothing else was checked",
        "fix the syntax error",
        "def f(:",
        "def f():",
    ),
    Rule(
        "TD101",
        "inverse-then-multiply",
        "warning",
        "explicit inverse whose result is multiplied",
        "use torch.linalg.solve(A, B), or a Cholesky factor with cholesky_solve / "
        "solve_triangular (whitening: torchdoctor.ops.whiten)",
        "y = torch.linalg.inv(S) @ x",
        "y = torch.linalg.solve(S, x)",
        "torchdoctor.ops.cholesky_factor",
        seed="000",
    ),
    Rule(
        "TD102",
        "factorization-in-loop",
        "warning",
        "solve/factorization of a loop-invariant matrix inside a loop",
        "factor the matrix once before the loop and solve all right-hand sides in one batched call",
        "for b in rhs:\n    xs.append(torch.linalg.solve(A, b))",
        "L = torch.linalg.cholesky(A)\nX = torch.cholesky_solve(torch.stack(rhs, -1), L)",
        "torchdoctor.ops.cholesky_factor",
        seed="000",
    ),
    Rule(
        "TD201",
        "host-sync-in-training-loop",
        "warning",
        "host-device sync (.item()/.cpu()/.numpy()/.tolist()/float()/print of a tensor) in a "
        "training step",
        "keep metrics as device tensors and convert them only when they are displayed",
        "for x, y in loader:\n    loss.backward(); opt.step()\n    total += loss.item()",
        "metrics.update(loss=loss.detach())  # LazyMetrics; .compute() at log time",
        "torchdoctor.train.LazyMetrics",
        seed="002",
    ),
    Rule(
        "TD202",
        "cuda-synchronize-in-training-loop",
        "warning",
        "torch.cuda.synchronize() in a training loop stalls the CPU every step",
        "remove it, or time with CUDA events resolved once per step (torchdoctor.profile)",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()\n    torch.cuda.synchronize()",
        "for b in loader:\n    model(b).sum().backward()\n    opt.step()",
        "torchdoctor.profile",
    ),
    Rule(
        "TD203",
        "tensor-rebuilt-from-host-data",
        "warning",
        "torch.tensor(python_list, device=...) rebuilt every iteration from tensor data",
        "index, stack or remap the device tensor directly instead of round-tripping through "
        "Python lists",
        "for b in loader:\n    ids = torch.tensor(b.tolist(), device=dev)",
        "for b in loader:\n    ids = b.to(dev, non_blocking=True)",
        seed="002",
    ),
    Rule(
        "TD301",
        "mask-per-value-in-loop",
        "warning",
        "torch.where(x == v) / (x == v).nonzero() / x[x == v] inside a loop over values",
        "group once: argsort + counts (torch.unique_consecutive / split) and iterate the groups",
        "for s in range(n_seg):\n    idx = torch.where(seg == s)[0]",
        "groups = torchdoctor.ops.group_by_segment(seg, n_seg)",
        "torchdoctor.ops.group_by_segment",
        seed="003",
    ),
    Rule(
        "TD302",
        "python-label-remap",
        "warning",
        "label remapping through Python containers or a loop over labels",
        "torch.unique(labels, return_inverse=True) remaps in one on-device op; --fix rewrites "
        "the exact `u = torch.unique(y); r = torch.zeros_like(y); for i, v in enumerate(u): "
        "r[y == v] = i` idiom",
        "u = sorted(set(y.tolist()))\nm = {v: i for i, v in enumerate(u)}",
        "_, y = torch.unique(y, return_inverse=True)",
        "torchdoctor.ops.remap_labels",
        autofix=True,
        seed="002",
    ),
    Rule(
        "TD303",
        "scipy-assignment-on-tensor",
        "warning",
        "scipy.optimize.linear_sum_assignment on tensor data copied to the host",
        "solve the assignment batched on the device (greedy/Sinkhorn/auction)",
        "r, c = linear_sum_assignment(-sim.detach().cpu().numpy())",
        "cols = torchdoctor.ops.linear_assignment(-sim)",
        "torchdoctor.ops.linear_assignment",
        seed="000",
    ),
    Rule(
        "TD401",
        "dataloader-no-workers",
        "warning",
        "DataLoader without num_workers > 0 loads batches on the training thread",
        "set num_workers (e.g. 2-8) so loading overlaps compute",
        "DataLoader(ds, batch_size=64)",
        "DataLoader(ds, batch_size=64, num_workers=4)",
        seed="004",
    ),
    Rule(
        "TD402",
        "dataloader-no-pin-memory",
        "info",
        "DataLoader without pin_memory=True while batches go to CUDA",
        "pin_memory=True, and .to(device, non_blocking=True) for overlapped copies",
        "DataLoader(ds, num_workers=4)",
        "DataLoader(ds, num_workers=4, pin_memory=True)",
        seed="004",
    ),
    Rule(
        "TD403",
        "dataloader-no-persistent-workers",
        "info",
        "DataLoader with workers but without persistent_workers=True respawns them each epoch",
        "persistent_workers=True (or `persistent_workers=num_workers > 0`)",
        "DataLoader(ds, num_workers=4)",
        "DataLoader(ds, num_workers=4, persistent_workers=True)",
        seed="004",
    ),
    Rule(
        "TD501",
        "whole-model-half",
        "info",
        "whole model cast to float16 for inference",
        "keep fp32 weights and run under torch.autocast (bfloat16 where supported)",
        "model = model.half()",
        "with torch.autocast('cuda', dtype=torch.bfloat16):\n    y = model(x)",
        seed="001",
    ),
    Rule(
        "TD502",
        "deprecated-sdp-kernel",
        "warning",
        "torch.backends.cuda.sdp_kernel is deprecated",
        "torch.nn.attention.sdpa_kernel([SDPBackend...]); --fix rewrites calls whose enable_* "
        "flags are literal True/False",
        "with torch.backends.cuda.sdp_kernel(enable_math=False):",
        "with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, "
        "SDPBackend.CUDNN_ATTENTION]):",
        autofix=True,
        seed="004",
    ),
    Rule(
        "TD503",
        "deprecated-cuda-amp-autocast",
        "warning",
        "torch.cuda.amp.autocast / torch.cpu.amp.autocast are deprecated",
        "torch.amp.autocast('cuda', ...)",
        "with torch.cuda.amp.autocast(dtype=torch.bfloat16):",
        "with torch.amp.autocast('cuda', dtype=torch.bfloat16):",
        autofix=True,
    ),
    Rule(
        "TD504",
        "deprecated-cuda-amp-gradscaler",
        "warning",
        "torch.cuda.amp.GradScaler / torch.cpu.amp.GradScaler are deprecated",
        "torch.amp.GradScaler('cuda', ...)",
        "scaler = torch.cuda.amp.GradScaler()",
        "scaler = torch.amp.GradScaler('cuda')",
        autofix=True,
    ),
    Rule(
        "TD601",
        "invariant-call-in-denoising-loop",
        "warning",
        "module call with loop-invariant arguments inside a denoising loop (over "
        "scheduler.timesteps or range(num_inference_steps), or over range(...) in a sample/"
        "generate/denoise function with a timestep variable t passed to the denoiser)",
        "encode the conditioning once before the loop and reuse it in every step",
        "for t in scheduler.timesteps:\n    cond = self.encoder(tokens)\n    x = step(x, t, cond)",
        "cond = self.encoder(tokens)\nfor t in scheduler.timesteps:\n    x = step(x, t, cond)",
        seed="001",
    ),
    Rule(
        "TD602",
        "eval-loop-without-no-grad",
        "warning",
        "evaluation/inference loop without torch.no_grad() / torch.inference_mode()",
        "wrap the loop (or decorate the function) with torch.inference_mode()",
        "model.eval()\nfor x in loader:\n    out = model(x)",
        "model.eval()\nwith torch.inference_mode():\n    for x in loader:\n        out = model(x)",
        seed="001",
    ),
]

#: code -> rule, in code order. Codes are stable once published.
RULES: dict[str, Rule] = {r.code: r for r in _R}


def resolve_codes(
    select: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> set[str]:
    """Expand ``select``/``ignore`` code prefixes (``TD2``, ``TD301``, ``ALL``) to rule codes.

    Raises ValueError naming an entry that matches no rule.

    Example:
        >>> sorted(resolve_codes(select=["TD4"], ignore=["TD403"]))
        ['TD000', 'TD401', 'TD402']
    """

    def expand(items: Iterable[str], what: str) -> set[str]:
        out: set[str] = set()
        for raw in items:
            item = raw.strip().upper()
            if not item:
                continue
            if item == "ALL":
                out |= set(RULES)
                continue
            matched = {c for c in RULES if c.startswith(item)}
            if not matched:
                known = ", ".join(RULES)
                raise ValueError(
                    f"unknown rule code {raw!r} in {what}; expected a code or prefix of: {known}"
                )
            out |= matched
        return out

    # A file that cannot be parsed is always reported unless TD000 is ignored explicitly.
    chosen = set(RULES) if select is None else expand(select, "--select") | {"TD000"}
    if ignore:
        chosen -= expand(ignore, "--ignore")
    return chosen

"""Rule ``torch-syncs``: host syncs that torch's own Python code makes, with the switch for each.

The sync audit names the torch function a sync happens in (``inside``, e.g.
``distributions/distribution.py:__init__``) when torch's code, not the user's line, reads a
tensor on the host. Telling the user to defer an ``.item()`` they never wrote is useless; most of
these have an argument or a global switch that avoids them. :data:`KNOWN_TORCH_SYNCS` is that
table (add an entry here); one Advice per entry, naming the user's lines that reach it. The
generic ``host-syncs`` rule leaves these records to this one.

Example:
    >>> rec = {"kind": "bool", "op": "q = Normal(mu, std)", "file": "/me/vae.py", "line": 9,
    ...        "per_step": 2.0, "phase": "forward", "inside": "distributions/distribution.py:__init__"}
    >>> [a.title for a in torch_syncs({"syncs": [rec]})]  # doctest: +NORMALIZE_WHITESPACE
    ['torch.distributions checks its arguments and samples on the host: 2 syncs per step from
      vae.py:9']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchdoctor.analyze.advice.base import (
    SPEEDUPS,
    Advice,
    Speedup,
    amdahl_saving,
    fmt_count,
    fmt_ms,
    location,
    negligible_syncs,
    sync_heat,
    tree_step_ms,
)
from torchdoctor.analyze.advice.hot_lines_data import line_of, measured_lines, run_calls_factor

MIN_PER_STEP = 0.5  # below: a read every few steps (a log interval, an epoch end)


@dataclass(frozen=True)
class TorchSync:
    """A sync inside torch's own code: where (file under torch/, functions), why, the switch.

    Example:
        >>> TorchSync("x.py", ("f",), "t", "why", "fix", "code").matches({"inside": "x.py:f"})
        True
    """

    file: str
    functions: tuple[str, ...]
    title: str
    what: str
    fix: str
    code: str
    #: the fix when the run is known to train in bf16 (GradScaler: none needed)
    bf16_fix: str | None = None
    #: SPEEDUPS key of the switch measured on the user lines reaching the sync (their CPU
    #: time, which the checks cost on any device), when suite 'fused' has its pair
    speedup: str | None = None
    #: the switch changes the forward only (validation: no backward to speed up): the speedup
    #: applies to the lines' forward time, as measured forward only
    forward_only: bool = False

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether a SyncRecord's torch function is this one."""
        file, _, function = str(record.get("inside") or "").partition(":")
        return file == self.file and (not self.functions or function in self.functions)


KNOWN_TORCH_SYNCS: tuple[TorchSync, ...] = (
    TorchSync(
        "distributions/distribution.py",
        ("__init__", "_validate_sample"),
        "torch.distributions checks its arguments and samples on the host",
        "argument validation is on by default (outside `python -O`): every distribution built "
        "tests its parameters against their constraints in an `if`, and every log_prob tests "
        "its value, one host read each",
        "Turn validation off once the code is known correct: "
        "torch.distributions.Distribution.set_default_validate_args(False) at start (or "
        "validate_args=False per distribution).",
        "torch.distributions.Distribution.set_default_validate_args(False)  # once, at start\n"
        "q = Normal(mu, std)                 # no host check per construction / log_prob",
        speedup="distribution_validation_forward",
        forward_only=True,
    ),
    TorchSync(
        "amp/grad_scaler.py",
        (),
        "GradScaler reads whether the gradients overflowed at every optimizer step",
        "GradScaler.step skips the step when a gradient is inf/NaN, which it learns by reading "
        "found_inf on the host: one sync per optimizer step, inherent to fp16 loss scaling",
        "With fp16 this read is the price of loss scaling (keep one scaler.step per optimizer "
        "step, not per micro-batch); bf16 autocast needs no GradScaler at all (bf16 has fp32's "
        "exponent range).",
        'with torch.autocast("cuda", dtype=torch.bfloat16):   # bf16: no scaler\n'
        "    loss = model(x)\n"
        "loss.backward()\n"
        "optimizer.step()",
        bf16_fix="The model runs under bf16 autocast, which needs no loss scaling: drop the "
        "GradScaler (call loss.backward() and optimizer.step() directly) and the read goes "
        "with it.",
    ),
    TorchSync(
        "nn/utils/clip_grad.py",
        (),
        "clip_grad_norm_(error_if_nonfinite=True) tests the norm on the host",
        "with error_if_nonfinite=True every call tests the total norm for inf/NaN in an `if`",
        "Use error_if_nonfinite=False (the default) and check the returned norm at log time "
        "(or let GradScaler skip non-finite steps).",
        "norm = clip_grad_norm_(params, 1.0, error_if_nonfinite=True)  # before\n"
        "norm = clip_grad_norm_(params, 1.0)                           # after: check at log time",
    ),
    TorchSync(
        "optim/swa_utils.py",
        ("update_parameters",),
        "AveragedModel.update_parameters tests its counter on the host at every update",
        "an AveragedModel (an EMA or SWA copy) keeps n_averaged as a tensor on the model's "
        "device and branches on it twice per update_parameters call (copy on the first, "
        "average after): two host reads per update",
        "Update the average every N steps (an EMA with decay**N per update), or keep the EMA "
        "by hand after one copy: torch._foreach_lerp_(ema_params, model_params, 1 - decay) "
        "makes no host read (one kernel for all parameters).",
        "ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))  # before\n"
        "ema.update_parameters(model)                                        # 2 reads a call\n"
        "ema_params = [p.detach().clone() for p in model.parameters()]      # after: once\n"
        "torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - 0.999)",
    ),
    TorchSync(
        "nn/modules/transformer.py",
        ("_detect_is_causal_mask",),
        "nn.Transformer layers test whether your mask is causal at every call",
        "given a mask and no is_causal, TransformerEncoder/Decoder compare the mask with a "
        "causal one on the host to pick the fused causal path",
        "Pass is_causal=True with a causal mask (or is_causal=False with another mask): the "
        "layers trust the flag and skip the comparison.",
        "y = encoder(x, mask=causal_mask)                  # before\n"
        "y = encoder(x, mask=causal_mask, is_causal=True)  # after",
    ),
)


def known_torch_sync(record: Mapping[str, Any]) -> TorchSync | None:
    """The :data:`KNOWN_TORCH_SYNCS` entry a sync record matches, or None.

    Example:
        >>> known_torch_sync({"inside": "nn/utils/clip_grad.py:_get_total_norm"}).file
        'nn/utils/clip_grad.py'
        >>> known_torch_sync({"inside": None}) is None
        True
    """
    if not record.get("inside"):
        return None
    return next((k for k in KNOWN_TORCH_SYNCS if k.matches(record)), None)


def _per_step(record: Mapping[str, Any]) -> float:
    value = record.get("per_step")
    return float(value) if isinstance(value, (int, float)) else 0.0


def torch_syncs(session: Mapping[str, Any]) -> list[Advice]:
    """One Advice per known torch-internal sync reached at least every other step.

    Example:
        >>> rec = {"kind": "bool", "file": "/w/t.py", "line": 3, "per_step": 1.0,
        ...        "inside": "nn/utils/clip_grad.py:_get_total_norm"}
        >>> [a.cause for a in torch_syncs({"syncs": [rec], "step_ms": {"median": 5.0}})]
        ['torch-sync:nn/utils/clip_grad.py']
    """
    knobs = (session.get("environment") or {}).get("knobs") or {}
    bf16 = knobs.get("autocast_dtype") == "bfloat16"
    groups: dict[TorchSync, list[Mapping[str, Any]]] = {}
    for record in session.get("syncs") or ():
        known = known_torch_sync(record)
        if known is not None and _per_step(record) >= MIN_PER_STEP:
            groups.setdefault(known, []).append(record)
    advice = []
    for known, records in groups.items():
        records.sort(key=_per_step, reverse=True)
        per_step = sum(_per_step(r) for r in records)
        lines = [f"{os.path.basename(str(r.get('file')))}:{r.get('line')}" for r in records]
        evidence = [f"{known.what}: {fmt_count(per_step)} per step"]
        evidence += [
            f"{line} {str(r.get('op') or '').strip()} [{r.get('kind')}] "
            f"x{fmt_count(_per_step(r))}/step (inside torch's {r.get('inside')})"
            for line, r in zip(lines, records)
        ]
        stall = [r["stall_ms"] for r in records if isinstance(r.get("stall_ms"), (int, float))]
        step = tree_step_ms(session)
        if not stall and negligible_syncs(per_step, step):
            continue
        if not stall:
            evidence.append("predicted on this run: each waits for the GPU queue on CUDA")
        item = Advice(
            rule="torch-syncs",
            title=f"{known.title}: {fmt_count(per_step)} sync{'' if per_step == 1 else 's'} "
            "per step from "
            f"{', '.join(dict.fromkeys(lines))}",
            confidence="high" if stall else "medium",
            evidence=evidence,
            fix=known.bf16_fix if bf16 and known.bf16_fix else known.fix,
            references=[f"torch/{known.file}"],
            code=known.code,
            locations=list(dict.fromkeys(location(r.get("file"), r.get("line")) for r in records)),
            heat=sync_heat(per_step),
            cause=f"torch-sync:{known.file}",
        )
        if stall and step > 0:
            item.estimated_saving_ms = min(sum(stall), step)
            item.saving_range_ms = [item.estimated_saving_ms, item.estimated_saving_ms]
        elif known.speedup is not None:
            _measured_switch(session, item, records, SPEEDUPS[known.speedup], known.forward_only)
        advice.append(item)
    return advice


def _measured_switch(
    session: Mapping[str, Any], item: Advice, records: list[Mapping[str, Any]], speed: Speedup,
    forward_only: bool = False,
) -> None:
    """The saving of a switch measured apart (``speed``) on the user lines reaching the sync,
    from their measured time per step (hot lines, the profiler's own cost left out): the
    checks' host time, which a CPU run pays too (a GPU run adds the waits).

    Example:
        >>> item = Advice(rule="torch-syncs", title="t")
        >>> line = {"file": "/w/ppo.py", "line": 9, "owner": "", "total_ms": {"mean": 2.0},
        ...         "forward_ms": {"mean": 1.5}, "backward_ms": {"mean": 0.5},
        ...         "calls_per_step": 1, "torch_calls_per_step": 4, "top_ops": []}
        >>> session = {"step_ms": {"mean": 10.0}, "hot_lines": {"lines": [line]}}
        >>> _measured_switch(session, item, [{"file": "/w/ppo.py", "line": 9}], Speedup(1.25, 1.5, "s"))
        >>> [round(ms, 2) for ms in item.saving_range_ms]
        [0.4, 0.67]
    """
    rows = measured_lines(session)
    calls = run_calls_factor(session)  # (the checks come per model call: weigh them by it)
    rows_found: dict[int, tuple[Mapping[str, Any], float]] = {}
    for record in records:
        row = line_of(session, record.get("file"), record.get("line"), rows)
        if row:  # (the line's time is its typical steps'; periodic steps call it more)
            factor = calls if calls is not None else max(
                _periodic_factor(record), rows_found.get(id(row), (row, 1.0))[1])
            rows_found[id(row)] = (row, factor)
    own = [(float(row["own_ms"]) * (  # (the forward's part of the line's own time)
        float(row["forward_ms"]) / float(row["total_ms"]) if forward_only and row["total_ms"]
        else 1.0), factor) for row, factor in rows_found.values()]  # fmt: skip
    typical = sum(ms for ms, _ in own)
    spent = sum(ms * factor for ms, factor in own)
    if spent <= 0:
        return
    item.estimated_saving_ms = amdahl_saving(spent, 1.0, speed.low)
    item.saving_range_ms = [item.estimated_saving_ms, amdahl_saving(spent, 1.0, speed.high)]
    periodic = (
        f", {fmt_ms(spent)} at the run's {calls:.2g}x the model calls per step of the detailed "
        "steps" if calls is not None else
        f", {fmt_ms(spent)} with the calls of the periodic steps (a rollout, an evaluation) "
        "averaged over all steps" if spent > 1.05 * typical else ""
    )
    item.evidence.append(
        f"measured: those lines take {fmt_ms(typical)} per typical step "
        f"({'their forward' if forward_only else 'forward and backward'}){periodic}; with "
        f"the switch {speed.low:g}x-{speed.high:g}x faster ({speed.source})"
    )


def _periodic_factor(record: Mapping[str, Any]) -> float:
    """How many times the line's typical-step rate its syncs come at over the whole run,
    periodic steps included (an RL rollout between updates builds a distribution per
    environment step: cleanrl's PPO, 7.3 per step against 1 in a typical update step); 1 when
    it syncs in typical steps only, or in periodic ones only (its time there is unmeasured).

    Example:
        >>> _periodic_factor({"per_step": 7.3, "typical_per_step": 1.0, "in_outlier_steps": 1})
        7.3
        >>> _periodic_factor({"per_step": 2.0}), _periodic_factor({"per_step": 0.1, "typical_per_step": 0.0})
        (1.0, 1.0)
    """
    typical = record.get("typical_per_step")
    if not isinstance(typical, (int, float)) or typical <= 0:
        return 1.0
    return max(1.0, _per_step(record) / float(typical))

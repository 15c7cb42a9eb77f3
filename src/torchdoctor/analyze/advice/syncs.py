"""Rule ``host-syncs``: host-device synchronizations inside the profiled step (seed 002, 003).

Two families, one Advice each: scalar extraction (``.item()``, ``float(t)``, ``.tolist()``,
``.cpu()``, ``if t:`` ...) at least every other step, outside ``optimizer.step()`` (whose
own reads, e.g. LBFGS's, the user cannot defer) -> keep metrics on device
(``torchdoctor.train.LazyMetrics``), or, when they come LOOP_READS or more times a step (a
Python loop reading per item: actions for an environment), batch the loop;
data-dependent shapes (``nonzero``, ``unique``, boolean-mask indexing ...) -> the sync-free ops.
The saving is the measured stall (CUDA runs); on CPU runs the syncs are predicted, the stall is
not measured, and the saving is left unknown. Unmeasured syncs too few for their step (at most
1 ms each, under 1% of it: ``base.negligible_syncs``) get no advice; the sync table keeps them.

Example:
    >>> host_syncs({"syncs": []})
    []
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import (
    Advice,
    center,
    fmt_count,
    fmt_ms,
    location,
    negligible_syncs,
    pct,
    sync_heat,
    tree_step_ms,
)
from torchdoctor.analyze.advice.sync_families import (
    CODE,
    by_family,
    counts_text,
    family_fixes,
    is_action,
)
from torchdoctor.analyze.advice.torch_syncs import known_torch_sync
from torchdoctor.lint.rules_dynamic_shape import REMEDIES

SCALAR_KINDS = {"item", "cpu", "tolist", "numpy", "bool", "float", "int", "format", "repr"}
SHAPE_KINDS = {
    "nonzero",
    "unique",
    "masked_select",
    "bool_index",
    "bool_setitem",
    "repeat_interleave",
    "equal",
    "allclose",
}
MAX_LINES = 5
#: sync kind -> the TD207 remedy form for it (the fix names each kind the run recorded)
REMEDY_OF_KIND = {
    "bool_index": "read",
    "masked_select": "masked_select",
    "bool_setitem": "assign",
    "nonzero": "nonzero",
    "unique": "unique",
    "repeat_interleave": "repeat_interleave",
}
MIN_SCALAR_PER_STEP = 0.5  # below: a read every few steps, i.e. already at a log interval
#: scalar reads per step (all lines) from which they are a Python loop's, not a step's metrics
#: (pytorch/examples reinforce: action.item() for the environment, 210 per step)
LOOP_READS = 8
#: when the whole run is one step (no boundary seen), a read is a loop's only when repeated
MIN_REPEATS_IN_ONE_STEP = 3


def _inside_optimizer_step(record: Mapping[str, Any]) -> bool:
    """A sync attributed to the user's ``optimizer.step(...)`` line: torch.optim's own reads."""
    return record.get("phase") == "optimizer" and ".step(" in str(record.get("op") or "")


def _where(record: Mapping[str, Any]) -> str:
    file = os.path.basename(str(record.get("file") or "?"))
    return f"{file}:{record.get('line', '?')}"


def _per_step(record: Mapping[str, Any]) -> float:
    value = record.get("per_step")
    return float(value) if isinstance(value, (int, float)) else 0.0


def _how_often(record: Mapping[str, Any]) -> str:
    """``x2/step``; for a line that syncs in few of the audited steps (an evaluation run in
    one step of the window), how many times in those steps instead of a misleading average.

    Example:
        >>> _how_often({"per_step": 6.67, "count": 100, "steps": 1})
        'x100 in 1 step (x6.67/step on average)'
        >>> _how_often({"per_step": 1.0, "count": 15, "steps": 15})
        'x1/step'
        >>> _how_often({"per_step": 0.33, "count": 100, "steps": 1, "in_outlier_steps": 1})
        'x100 in 1 outlier step (periodic work: x0.33/step over the run)'
    """
    per_step = _per_step(record)
    steps = record.get("steps")
    count = record.get("count")
    rare = record.get("in_outlier_steps")
    if isinstance(rare, int) and rare > 0 and rare == steps and isinstance(count, int | float):
        plural = "s" if rare > 1 else ""
        return (
            f"x{fmt_count(count / rare)} in {'each of ' if rare > 1 else ''}{rare} outlier "
            f"step{plural} (periodic work: x{fmt_count(per_step)}/step over the run)"
        )
    if isinstance(steps, int) and steps > 0 and isinstance(count, (int, float)):
        in_each = count / steps
        if in_each >= 2 * per_step:
            plural = "s" if steps > 1 else ""
            return (
                f"x{fmt_count(in_each)} in {'each of ' if steps > 1 else ''}{steps} step{plural} "
                f"(x{fmt_count(per_step)}/step on average)"
            )
    return f"x{fmt_count(per_step)}/step"


def _stall_per_step(records: list[Mapping[str, Any]]) -> float | None:
    """Sum of measured stalls (``stall_ms`` is per step, per line); None when none measured."""
    measured = [r for r in records if isinstance(r.get("stall_ms"), (int, float))]
    if not measured:
        return None
    return sum(float(r["stall_ms"]) for r in measured)


def _your_lines(records: list[Mapping[str, Any]]) -> str:
    """The recorded source lines, as the "before" of the code change."""
    lines = [
        f"{str(r.get('op')).strip()}    # {_where(r)}" for r in records[:MAX_LINES] if r.get("op")
    ]
    if not lines:
        return ""
    return "# your lines that sync:\n" + "\n".join(lines) + "\n# the pattern to use instead:\n"


def _shape_fix(records: list[Mapping[str, Any]]) -> str:
    """The remedy of each data-dependent-shape kind recorded (heaviest first), as TD207 says
    it; the batched sync-free ops for loops of them.

    Example:
        >>> _shape_fix([{"kind": "repeat_interleave"}])
        'repeat_interleave: pass `output_size=` with the total, known on the CPU side of the batch.'
    """
    kinds = list(dict.fromkeys(str(r.get("kind")) for r in records))
    parts = [f"{kind}: {REMEDIES[REMEDY_OF_KIND[kind]]}" for kind in kinds if kind in REMEDY_OF_KIND]
    if not parts:
        parts = ["compute with the mask or indices at a fixed shape (`torch.where(mask, a, b)` "
                 "instead of `a[mask]`)"]  # fmt: skip
    if any(_per_step(r) >= 2 for r in records):  # the same line many times a step: a loop
        parts.append("a Python loop of such ops over labels or segments: the batched sync-free "
                     "ops in torchdoctor.ops (group_by_segment, remap_labels)")  # fmt: skip
    return "; ".join(parts) + "."


#: the reads that bring a whole tensor to the host (an inference loop's outputs)
COPY_KINDS = frozenset({"cpu", "numpy", "tolist"})


def _advice(
    records: list[Mapping[str, Any]], step: float, *, scalar: bool, cuda: bool,
    inference: bool = False,
) -> Advice:  # fmt: skip
    records = sorted(records, key=_per_step, reverse=True)
    per_step = sum(_per_step(r) for r in records)
    lines = len({(r.get("file"), r.get("line")) for r in records})
    evidence = [f"{fmt_count(per_step)} host syncs per step from {lines} source line(s)"]
    for r in records[:MAX_LINES]:
        stall = r.get("stall_ms")
        stall_text = f", stall {fmt_ms(stall)}/step" if isinstance(stall, (int, float)) else ""
        evidence.append(
            f"{_where(r)} {r.get('op') or r.get('kind')} [{r.get('kind')}] "
            f"{_how_often(r)} in {r.get('phase') or '?'}{stall_text}"
        )
    if len(records) > MAX_LINES:
        evidence.append(f"... and {len(records) - MAX_LINES} more line(s)")
    stall = _stall_per_step(records)
    if stall is None:
        evidence.append(
            "stall not measured on this device: each of these waits for the GPU queue to drain "
            "on CUDA"
            if not cuda
            else "stall not measured for these lines"
        )
    families = by_family(records, _per_step) if scalar else {}
    kinds = set(families)
    if scalar and not (kinds <= {"loop", "metric"} or kinds == {"action"}) or len(kinds) > 1 and (
        per_step >= LOOP_READS
    ):  # reads of different kinds (DETR: metrics, asserts, a copy for scipy): a fix for each
        first = next(iter(families))
        advice = Advice(
            rule="host-syncs",
            title=f"{fmt_count(per_step)} host reads per step "
            f"({counts_text(families, _per_step)}): each waits for the device",
            evidence=evidence,
            fix=" ".join(family_fixes(families, _where)),
            references=["torchdoctor.train.LazyMetrics", "seed 002"],
            code=CODE[first],
        )
    elif scalar and (per_step >= LOOP_READS or all(map(is_action, records))):
        # one line read many times a step, or actions handed to an environment: a Python loop
        advice = Advice(
            rule="host-syncs",
            title=f"{fmt_count(per_step)} host reads per step from a Python loop: each "
            + ("waits for the device" if cuda else "would wait for the device on a GPU"),
            evidence=evidence,
            fix=_loop_fix(records, cuda),
            references=["torchdoctor.train.LazyMetrics", "seed 002"],
            code=_loop_code(records),
        )
    elif scalar and inference and all(r.get("kind") in COPY_KINDS for r in records):
        advice = Advice(
            rule="host-syncs",
            title="Copy the outputs to the host once, not every batch",
            evidence=evidence,
            fix="In an inference loop each batch's .cpu() / .numpy() / .tolist() waits for that "
            "batch to finish, and on a GPU the device then idles while the host stores it and "
            "fetches the next batch. Keep the outputs on the device and copy once after the "
            "loop (torch.cat(outputs).cpu()), in chunks if device memory is short; or copy "
            "without waiting (out.to('cpu', non_blocking=True) into pinned memory) and read it "
            "a batch later.",
            references=["torch.Tensor.to", "torch.cat"],
            code="all_outputs.append(output.cpu().numpy())           # before: a wait per batch\n"
            "all_outputs.append(output)                         # after: kept on the device\n"
            "all_outputs = torch.cat(all_outputs).cpu().numpy()  # one copy after the loop",
        )
    elif scalar and all(r.get("kind") == "bool" for r in records):
        advice = Advice(  # (Whisper's `if completed or ...`: a stop test, not a metric)
            rule="host-syncs",
            title="Branches on tensor values every step: each waits for the device",
            evidence=evidence,
            fix="The host needs the value to choose the branch. Test it every k steps (a "
            "decoding loop's stop test: check completion every few tokens, the extra tokens are "
            "masked), or keep the decision on the device (torch.where / a mask instead of the "
            "branch).",
            references=["torch.where"],
            code="if finished.all(): break                    # before: a wait every step\n"
            "if step % 8 == 0 and finished.all(): break  # after: one wait per 8 steps",
        )
    elif scalar:
        advice = Advice(
            rule="host-syncs",
            title="Keep per-step scalars on the device: defer .item()/.cpu() to display time",
            evidence=evidence,
            fix="Accumulate metrics as device tensors (torchdoctor.train.LazyMetrics) and "
            "convert once per log interval; replace `if tensor:` checks with tensor ops.",
            references=["torchdoctor.train.LazyMetrics", "seed 002"],
            code='metrics["loss"] = float(loss.item())   # before: one sync per step\n'
            "metrics.update(loss=loss.detach())      # after: LazyMetrics, synced at display",
        )
    else:
        advice = Advice(
            rule="host-syncs",
            title="Replace data-dependent-shape ops in the hot loop with sync-free ops",
            evidence=evidence,
            fix=_shape_fix(records),
            references=["torchdoctor.ops", "seed 002", "seed 003"],
            code="y = x[mask]                        # before: output shape depends on data\n"
            "y = torch.where(mask, x, 0)        # after: fixed shape, no host sync",
        )
    advice.code = _your_lines(records) + (advice.code or "")
    advice.locations = list(dict.fromkeys(location(r.get("file"), r.get("line")) for r in records))
    if stall is not None and step > 0:
        advice.estimated_saving_ms = min(stall, step)
        advice.saving_range_ms = [advice.estimated_saving_ms, advice.estimated_saving_ms]
        advice.confidence = "high"
        advice.heat = min(1.0, stall / step)
        advice.evidence.insert(
            1, f"measured stall {fmt_ms(stall)} per step ({pct(stall, step):.0f}% of the step)"
        )
    else:
        advice.confidence = "medium" if cuda else "low"
        advice.heat = sync_heat(per_step)
    return advice


def host_syncs(session: Mapping[str, Any]) -> list[Advice]:
    """Advice for host-device syncs recorded inside the step (one per family).

    Example:
        >>> rec = {"kind": "item", "op": "loss.item()", "file": "t.py", "line": 3,
        ...        "count": 10, "per_step": 1.0, "phase": "other", "stall_ms": None}
        >>> host_syncs({"syncs": [rec], "step_ms": {"median": 5.0}})[0].rule
        'host-syncs'
        >>> host_syncs({"syncs": [rec], "config": {"steps": 1}})  # the run is one step: once
        []
    """
    # syncs inside installed packages are the library-syncs rule's: the user does not own them
    # ... and those inside torch's own code with a known switch are the torch-syncs rule's
    records = [
        r
        for r in session.get("syncs") or ()
        if _per_step(r) > 0 and not r.get("library") and known_torch_sync(r) is None
    ]
    step = tree_step_ms(session)
    cuda = str((session.get("environment") or {}).get("device") or "").startswith("cuda")
    # Scalars read at a log interval (a print every N steps) already follow the advice, and
    # reads inside optimizer.step() (LBFGS's line search) are the optimizer's own.
    one_step = int((session.get("config") or {}).get("steps") or 0) == 1
    scalar = [
        r
        for r in records
        if r.get("kind") not in SHAPE_KINDS
        and _per_step(r) >= (MIN_REPEATS_IN_ONE_STEP if one_step else MIN_SCALAR_PER_STEP)
        and not _inside_optimizer_step(r)
    ]
    shape = [r for r in records if r.get("kind") in SHAPE_KINDS]
    advice = []
    # no backward anywhere: an inference loop, whose host copies are its results, not metrics
    phases = session.get("phases") or {}
    inference = center(phases.get("backward")) <= 0 and center(phases.get("forward")) > 0
    if scalar and not _negligible(scalar, step):
        advice.append(_advice(scalar, step, scalar=True, cuda=cuda, inference=inference))
    if shape and not _negligible(shape, step):
        advice.append(_advice(shape, step, scalar=False, cuda=cuda))
    return advice


def _negligible(records: list[Mapping[str, Any]], step: float) -> bool:
    """No stall measured and too few syncs to matter in a step this long (base.negligible_syncs)."""
    return _stall_per_step(records) is None and negligible_syncs(
        sum(_per_step(r) for r in records), step
    )


_LOOP_READ = ("Each read (.item(), int(t), a tensor in an `if`) holds the host until the device "
              "has the value: in a per-item loop, one round trip per item. ")
_PER_PARAMETER = re.compile(r"\bparameters\(\)|\bnamed_parameters\(|\bfor p\b")


def _per_parameter(records: list[Mapping[str, Any]]) -> bool:
    """Whether the loop reads one value per parameter (a callback's gradient or weight norms:
    ``[p.norm().item() for p in model.parameters()]``)."""
    return any(_PER_PARAMETER.search(str(r.get("op") or "")) for r in records)


def _loop_fix(records: list[Mapping[str, Any]], cuda: bool) -> str:
    """The fix of reads made in a Python loop, for what the loop reads.

    Example:
        >>> _loop_fix([{"op": "x = [int(i) for i in y]"}], False).startswith(_LOOP_READ)
        True
        >>> "torch._foreach_norm" in _loop_fix([{"op": "[p.norm().item() for p in m.parameters()]"}], False)
        True
    """
    if _per_parameter(records):
        return _LOOP_READ + (
            "A value per parameter (weight or gradient norms in a callback): compute them as "
            "one tensor, `torch.stack([p.detach().norm() for p in params])` or "
            "`torch._foreach_norm(params)` (one kernel for all), and read it once with "
            "`.tolist()`, at the log interval if they are logged (or log the tensor: loggers "
            "accept one)."
        )
    return _LOOP_READ + (
        "Converting a tensor element by element (`[itos[int(i)] for i in y]`, `for t in x: "
        "t.item()`): copy it once (`y.tolist()`) and loop over the Python values. If the host "
        "needs each value as it comes (an action for an environment, a branch), batch the loop: "
        "many items per forward (gymnasium.vector environments, a batch of samples); if they "
        "are metrics, accumulate them on the device (torchdoctor.train.LazyMetrics) and read "
        "once per log interval"
        + ("; a model this small, run item by item from the host, may be faster on the CPU."
           if cuda else ".")
    )


def _loop_code(records: list[Mapping[str, Any]]) -> str:
    """The before/after of :func:`_loop_fix`'s case."""
    if _per_parameter(records):
        return ("norms = [p.norm().item() for p in model.parameters()]           # before\n"
                "norms = torch._foreach_norm(list(model.parameters()))           # after: one\n"
                "norms = torch.stack(norms).tolist()  # one read (at the log interval)")
    return ("for obs in observations:                 # before: a read per item\n"
            "    action = policy(obs).argmax().item()\n"
            "actions = policy(torch.stack(observations)).argmax(-1).tolist()  # after: one")

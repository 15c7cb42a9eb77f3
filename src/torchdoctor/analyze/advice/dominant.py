"""Rule ``dominant-module``: one module, region or stack of identical layers takes >= 30% of the step.

A part that dominates only because it is recomputed on identical inputs (see the loop-invariant
rule) is left to that rule. The remedy depends on what the dominant part is, read from one table (:data:`REMEDIES`):
attention (fused SDPA, bf16), a stack of repeated layers (torch.compile; fewer or smaller
layers), linear algebra or matching (the batched torchdoctor.ops replacement), a leaf matmul
(Linear, GPT-2's Conv1D: bf16/TF32, shapes), a leaf embedding (sparse gradients), another leaf
module (torch.compile), a composite whose time is in its convolutions or matmuls (make those
cheaper: compile fuses neither), anything else (torch.compile; regions inside it). The table and
its predicates in :mod:`torchdoctor.analyze.advice.dominant_kinds`, the table in
:mod:`torchdoctor.analyze.advice.dominant_remedies`.

Example:
    >>> dominant_module({"step_ms": {"median": 0.0}, "tree": None})
    []
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.attention_measured import (
    FIX_WITHOUT_BF16,
    MEASURED_CODE,
    MEASURED_FIX,
    TITLE_WITHOUT_BF16,
    measured_attention,
)
from torchdoctor.analyze.advice.attention_switches import switch_in
from torchdoctor.analyze.advice.base import (
    COMPILE_SPEEDUPS,
    CPU_BF16_NOTE,
    SPEEDUPS,
    Advice,
    amdahl_saving,
    center,
    compile_on_cpu,
    fmt_ms,
    is_cuda,
    node_ms,
    pct,
    saving_step_ms,
    tree_step_ms,
    with_saving,
)
from torchdoctor.analyze.advice.dominant_kinds import (
    CPU_DROPOUT_NOTE,
    attention_core_ms,
    attention_dropout_ran,
    is_leaf,
    padded_convolutions,
)
from torchdoctor.analyze.advice.dominant_lines import NO_FACTS, LineFacts, line_facts
from torchdoctor.analyze.advice.dominant_remedies import REMEDIES, Remedy, attention_code
from torchdoctor.analyze.advice.dominant_stacks import candidates
from torchdoctor.analyze.advice.dominant_stacks import label as label_of
from torchdoctor.analyze.advice.double_backward import gradient_graph_part
from torchdoctor.analyze.advice.knobs import slow_backward_note
from torchdoctor.analyze.advice.knobs_layout import layout_realized
from torchdoctor.analyze.advice.ops_table import OPS_FOR, ops_for  # noqa: F401 (re-exported)
from torchdoctor.analyze.advice.rnn_per_step import MIN_CALLS as RNN_PER_STEP_CALLS
from torchdoctor.analyze.advice.rnn_per_step import SEQUENCE_TYPES
from torchdoctor.analyze.tree import group_repeated_siblings
from torchdoctor.session_read import walk

THRESHOLD = 0.30
#: a composite node covering this much of the step is the model itself, not a diagnosis
WRAPPER = 0.80


#: the fused-attention remedy on a CPU run whose attention ran dropout in training


#: the bf16 remedies' addition on a CPU known to lack bfloat16 units (rule emulated-bf16's case)
CPU_NO_BF16_NOTE = (
    " This CPU has no bfloat16 units (no AVX512-BF16 or AMX): torch.autocast('cpu', "
    "dtype=torch.bfloat16) would emulate the multiplies, {low:g}-{high:g}x slower "
    "(BENCHMARKS.md); here keep float32 and make them smaller or fewer."
)


#: attribute names that say nothing of the module (a wrapper's "module": DataParallel, DDP)
_GENERIC_NAMES = frozenset({"module", "model", "_orig_mod", "_fsdp_wrapped_module"})

def _parts_text(node: Mapping[str, Any], step: float | None = None) -> str:
    """Its three largest parts with their share of it, or of the ``step`` (the remedies'
    thresholds are shares of the step: BERT's "layer.0.attention 74%" beside "none of them
    takes 30% of the step" read as a contradiction).

    Example:
        >>> node = {"total_ms": {"median": 10.0}, "children": [
        ...     {"kind": "module", "path": "m.h.0", "total_ms": {"median": 6.0}},
        ...     {"kind": "module", "path": "m.h.1", "total_ms": {"median": 3.0}}]}
        >>> _parts_text(node), _parts_text(node, step=20.0)  # (numbered items: one group)
        ('m.h[0-1] 90% (2 x ~45%)', 'm.h[0-1] 45% (2 x ~22%) of the step')
    """
    total = (step or node_ms(node)) or 1.0
    children = group_repeated_siblings({"children": node.get("children") or []})["children"]
    parts = sorted(  # (dlrm's eight tables as emb_l[0-7], not its largest one, emb_l.5 2%)
        (c for c in children if c.get("kind") != "self"),
        key=node_ms,
        reverse=True,
    )[:3]
    return ", ".join(f"{label_of(c)} {pct(node_ms(c), total):.0f}%" + (
        f" ({c['group_count']} x ~{pct(node_ms(c) / c['group_count'], total):.0f}%)"
        if c.get("kind") == "group" else "") for c in parts) + (" of the step" if step else "")


def _kept_after_caching(session: Mapping[str, Any], path: str) -> float:
    """Share of a node's time left once loop-invariant calls of it (or an ancestor) are cached."""
    for record in session.get("recomputation") or ():
        recomputed = str(record.get("path") or "")
        calls = float(record.get("calls_per_step") or 0)
        repeats = float(record.get("identical_input_calls") or 0)
        if recomputed and calls > 0 and (path == recomputed or path.startswith(recomputed + ".")):
            return max(0.0, 1.0 - repeats / calls)
    return 1.0


#: above this estimated profiler share of the step, a dominant module may be partly hook cost
OVERHEAD_CAVEAT_PCT = 20.0
#: ... and above this measured cost of a detailed step over a light one (all collectors: a
#: Hugging Face generate() step of 55 module calls and 371 torch calls, 4.8 ms light, 11 ms
#: detailed), whatever the hooks' calibrated part
MEASURED_CAVEAT_PCT = 50.0


def _remedy_for(
    node: Mapping[str, Any],
    group: list | None,
    cuda: bool,
    facts: LineFacts = NO_FACTS,
    fused_anywhere: bool = False,
) -> Remedy:
    """The first remedy that fits; attention that already runs the fused kernel (a measured
    line inside it calls scaled_dot_product_attention: ``facts.fused``; or library code called
    it where the sync audit saw it, ``fused_anywhere``: a Hugging Face model's own SDPA
    attention) is not told to use it, nor attention whose measured lines change the scores or
    the weights in ways the kernel cannot (``facts.not_sdpa_in``: x-transformers' cog-signed
    attention); a leaf whose measured lines are its matrix multiplies is a matmul, whatever
    its class."""
    paths = [str(n.get("path") or "") for n in (group or [node])]
    fused = facts.fused
    calls = [p["attention"] for n in (group or [node]) for p, _ in walk(n) if p.get("attention")]
    already = (
        fused_anywhere
        or any(o == p or o.startswith(p + ".") for p in paths for o in fused)
        or bool(facts.not_sdpa_in(paths))  # (attention SDPA cannot compute: cog, talking heads)
        # (nn.TransformerEncoderLayer calls its MultiheadAttention with need_weights=False:
        # the fused kernel runs already)
        or bool(calls) and all(c.get("need_weights") is False for c in calls)
    )
    remedy = next(
        r for r in REMEDIES if r.when(node, group, cuda) and not (already and r.name == "attention")
    )
    if remedy.name in ("leaf", "matmul") and facts.is_sparse_matmul(node, node_ms(node)):
        return next(r for r in REMEDIES if r.name == "sparse-matmul")
    if remedy.name == "leaf" and facts.is_matmul(node, node_ms(node)):
        return next(r for r in REMEDIES if r.name == "matmul")
    return remedy


def dominant_module(session: Mapping[str, Any]) -> list[Advice]:
    """Advice for each leaf-most module/region/layer stack taking >= 30% of the step.

    Example:
        >>> tree = {"kind": "root", "path": "", "total_ms": {"median": 10.0}, "children": [
        ...     {"kind": "module", "path": "head", "name": "head", "type": "Linear",
        ...      "total_ms": {"median": 8.0}, "children": []}]}
        >>> [a.title for a in dominant_module({"step_ms": {"median": 10.0}, "tree": tree})]
        ['head (Linear) dominates the step: it is one matmul: make the matmul cheaper']
    """
    step = tree_step_ms(session)
    unprofiled = saving_step_ms(session)  # (savings are of the step without the profiler)
    tree = session.get("tree")
    if not tree or step <= 0:
        return []
    advice: list[Advice] = []
    estimate = (session.get("config") or {}).get("profiler_overhead") or {}
    overhead = _hooks_pct(estimate, step)
    measured_pct = (
        float(estimate.get("overhead_pct") or 0.0)
        if estimate.get("source") in ("measured", "window bound")
        else 0.0
    )
    cuda = is_cuda(session)
    facts = line_facts(session)
    knobs = (session.get("environment") or {}).get("knobs") or {}
    fused_anywhere = knobs.get("fused_attention") is True
    bf16 = (session.get("environment") or {}).get("bf16_native")
    bf16_native = bf16 is True or (bf16 is None and cuda)  # (unknown: a CUDA device has it)
    # (the run is under autocast already: TRL's SFTConfig bf16=True on a CPU; no "and bf16")
    low_precision = knobs.get("autocast") is True
    float64 = any(o.get("dtype") == "float64"
                  for o in (session.get("environment") or {}).get("optimizers") or ())  # fmt: skip
    for node, label, group in candidates(tree, step, THRESHOLD, WRAPPER):
        part_ms = sum(node_ms(c) for c in group) if group else node_ms(node)
        if part_ms * _kept_after_caching(session, str(node.get("path") or "")) < THRESHOLD * step:
            continue  # it dominates only because it is recomputed: loop-invariant advice covers it
        fraction = part_ms / step
        evidence = [f"{label} is {pct(part_ms, step):.0f}% of the step ({fmt_ms(part_ms)})"]
        if group:
            per_layer = part_ms / len(group)
            evidence.append(
                f"{len(group)} identical {group[0].get('type')} layers, ~{fmt_ms(per_layer)} each"
            )
        fwd = sum(_fwd(c) for c in group) if group else _fwd(node)
        bwd = part_ms - fwd
        through = gradient_graph_part(session, label, fwd, bwd, step)  # (not the module's)
        if through is not None:
            advice.append(through)
            continue
        if bwd > 0:
            evidence.append(f"forward {fmt_ms(fwd)}, backward {fmt_ms(bwd)}")
        measured = measured_attention(node, group)  # (need_weights=False timed on its shapes)
        slower = measured is not None and not measured.faster
        remedy = _remedy_for(node, group, cuda, facts, fused_anywhere or slower)
        if remedy.name == "recurrent" and any(
            str(m.get("type")) in SEQUENCE_TYPES
            and float(m.get("calls_per_step") or 0.0) >= RNN_PER_STEP_CALLS
            for m in group or [node]
        ):
            continue  # (called per time step: rule rnn-per-step's cause; char-rnn's GRU, called
            # 200 times a step, was told "pack padded batches" above "pass the whole sequence")
        not_sdpa = facts.not_sdpa_in([str(n.get("path") or "") for n in group or [node]])
        if not_sdpa:
            evidence.append(_NOT_SDPA_TEXT + "; ".join(
                f"{b.get('location')} `{b.get('code')}`: {b.get('what')}" for b in not_sdpa[:3]))
        if remedy.name == "layer-stack":
            halve = amdahl_saving(unprofiled, fraction, SPEEDUPS["halve_layers"].low)
            evidence.append(f"halving the stack (needs retraining) would save ~{fmt_ms(halve)}")
        ops = ops_for(f"{node.get('name') or ''} {node.get('type') or ''}")
        named = str(node.get("type") or "") not in ("", label.rsplit(".", 1)[-1])
        # a leaf's type says what it is; so does a numbered child of the model ("2": which?)
        numbered = label.split(".", 1)[0].isdigit()
        # ... and a wrapper's generic attribute (DataParallel's and DDP's "module": which?)
        generic = label.rsplit(".", 1)[-1] in _GENERIC_NAMES
        leaf_type = (f" ({node.get('type')})"
                     if not group and named and (is_leaf(node) or numbered or generic)
                     else "")  # fmt: skip
        title, fix = remedy.title, remedy.fix
        code = attention_code(group or [node]) if remedy.name == "attention" else remedy.code
        if remedy.name == "layer-stack" and bwd <= 0:  # (inference: nothing trains here)
            fix = fix.replace("train a model with fewer or narrower layers",
                              "serve a smaller model (fewer or narrower layers, a distilled one)")
        if remedy.cause == "bf16-autocast" and not cuda and bf16 is True:
            fix += CPU_BF16_NOTE
            code = (code or "").replace('device_type="cuda"', 'device_type="cpu"')
        elif remedy.cause == "bf16-autocast" and not cuda and bf16 is False:
            # (a CUDA snippet for a CPU run, where autocast would emulate bf16: WGAN-GP's
            # discriminator, clients round 17)
            fix += CPU_NO_BF16_NOTE.format(low=SPEEDUPS["emulated_bf16"].low,
                                           high=SPEEDUPS["emulated_bf16"].high)  # fmt: skip
            code = None
        references = (ops if remedy.name == "linear-algebra" else []) + list(remedy.references)
        inside = facts.heaviest_in([str(n.get("path") or "") for n in group or [node]])
        named: list[str] = []
        if inside and remedy.name in _LOOK_INSIDE:  # (the hot lines already looked inside it)
            evidence.append("its heaviest measured lines: " + _lines_text(inside))
            if remedy.name == "composite":
                title = f"start at its heaviest line, {inside[0][0]}, and compile it"
                named = [inside[0][0]]  # (a cure of that line's own is this advice's)
                lines = _lines_text(inside).replace("{", "{{").replace("}", "}}")  # (formatted)
                fix, references = _COMPOSITE_LINES_FIX.format(lines=lines), ["torch.compile"]
        if remedy.name == "attention" and measured is not None:
            calls = ("its nn.MultiheadAttention calls" if measured.every_call
                     else f"the nn.MultiheadAttention calls of {measured.targets}")  # fmt: skip
            title = (f"pass need_weights=False to {calls} (fused SDPA, measured "
                     f"{measured.speedup:.2f}x on their shapes)")  # fmt: skip
            fix, code = MEASURED_FIX, MEASURED_CODE
        elif remedy.name == "attention" and (not bf16_native or low_precision):
            title, fix = TITLE_WITHOUT_BF16, FIX_WITHOUT_BF16
        switch = (switch_in(group or [node], tree) if remedy.name == "attention" and not measured
                  else None)  # fmt: skip
        if switch is not None:  # (the library's own fused attention, off: its switch, not a rewrite)
            evidence.append(f"its {switch.owner} is {switch.setting}: the fused attention it has "
                            "is off")  # fmt: skip
            also_bf16 = title != TITLE_WITHOUT_BF16
            title = switch.title + (" and bf16" if also_bf16 else "")
            fix = switch.fix + (" Run it under torch.autocast(dtype=bfloat16)." if also_bf16
                                else "")  # fmt: skip
            code = None
        item = Advice(
            rule="dominant-module",
            title=f"{label}{leaf_type} dominates the step: {title}",
            confidence=remedy.confidence,
            evidence=evidence,
            fix=fix.format(
                ops=", ".join(ops) if ops else "see torchdoctor.ops", parts=_parts_text(node, step)
            ),
            references=references,
            code=code,
            cause=remedy.cause,
            locations=named,
        )
        if measured is not None:
            item.evidence += measured.evidence
            if slower:
                item.evidence.append(
                    f"so its attention is not told to run fused: {fmt_ms(measured.step_ms)} of "
                    f"nn.MultiheadAttention calls would take {fmt_ms(measured.fused_ms)}"
                    + ("; on a CPU in training with dropout, SDPA runs its unfused math path"
                       if not cuda and measured.dropout_in_training else "")
                )  # fmt: skip
        speedup = remedy.speedup
        if remedy.name in ("matmul", "matmuls") and not cuda:
            speedup = None  # bf16/TF32 tensor cores: no stated speedup for a CPU matmul
            item.heat = fraction
        if remedy.name in ("rnn-cell", "cell-by-hand") and not cuda and float64:
            speedup, item.cause, item.heat = None, "float64", fraction  # (float64-training's)
            item.evidence.append("the model computes in float64: there nn.LSTM measured no "
                                 "faster than a loop of cells on a CPU (299 vs 285 ms); in "
                                 "float32 it did (86.5 ms)")  # fmt: skip
        if remedy.name == "attention" and measured is not None:  # (measured: exact)
            item.estimated_saving_ms = max(0.0, measured.saving_ms)
            item.saving_range_ms = [item.estimated_saving_ms, item.estimated_saving_ms]
            item.heat = min(1.0, measured.saving_ms / step)
            speedup = None
            fraction = measured.saving_ms / step
        elif remedy.name == "attention":  # the kernel speeds the attention core, not the rest
            core = attention_core_ms(node, group)
            if core > 0:
                fraction = min(fraction, core / step)
                item.evidence.append(
                    f"the attention it replaces (the attention parts less their projections) "
                    f"is {fmt_ms(core)}, {pct(core, step):.0f}% of the step"
                )
            dropout = attention_dropout_ran(node, group) or (  # (HF eager: F.dropout)
                switch is not None and switch.dropout > 0 and bwd > 0)
            if not cuda and dropout:  # (a bound, not a saving)
                speedup, item.confidence, item.heat = None, "low", fraction
                item.saving_range_ms = [0.0, amdahl_saving(unprofiled, fraction,
                                                           SPEEDUPS["sdpa"].high)]
                item.evidence.append(CPU_DROPOUT_NOTE)
        if remedy.name == "padded-convolutions":  # the centre-tap swap speeds those alone
            exact = _padded_evidence(item, node, group, step)
            fraction, speedup = (exact, speedup) if exact > 0 else (fraction, None)
        if speedup in COMPILE_SPEEDUPS and not cuda:  # (compile on a CPU: measured 0.55-1.32x)
            compile_on_cpu(item, unprofiled, fraction)
        elif speedup == "channels_last" and not cuda:  # (a bound, as the CPU knob's: OSNet's
            compile_on_cpu(item, unprofiled, fraction, "channels_last_cpu")  # test run was told
            layout_realized(item, session, bwd > 0)  # 12.5 ms at CUDA's 1.05x; measured 221)
        elif speedup is not None:  # (SDPA on a CPU: measured there, not CUDA's 1.3-2x)
            if speedup == "sdpa" and not cuda:  # (its mask known from its lines: TD507)
                speedup = facts.cpu_attention_speedup([str(n.get("path")) for n in group or [node]])
            with_saving(item, unprofiled, fraction, SPEEDUPS[speedup])
        elif item.estimated_saving_ms is None:
            item.heat = min(1.0, fraction)
        if remedy.name in ("convolution", "convolutions"):  # (a layout's slow backward path)
            slow_backward_note(item, {"children": list(group or [node])}, step)
        if overhead >= OVERHEAD_CAVEAT_PCT:  # (second: the console shows three lines)
            item.evidence.insert(
                1,
                f"the profiler's own hooks are ~{overhead:.0f}% of the step here (many small "
                "module calls): part of this time is the profiler's, not the model's"
            )
            item.confidence = "low"
        elif measured_pct >= MEASURED_CAVEAT_PCT:
            item.evidence.insert(
                1,
                f"a detailed step here costs {measured_pct:.0f}% more than a light one "
                "(measured: hooks, the sync audit, the lines' timers on many small calls): the "
                "shares are of the detailed step, where the profiler's part of small calls "
                "inflates their rows"
            )
            item.confidence = "low"
        advice.append(item)
    return advice


#: evidence for attention whose measured lines SDPA cannot compute (its blockers follow)
_NOT_SDPA_TEXT = (
    "not told to use fused SDPA: its attention is not softmax(q @ k^T * scale + mask) @ v, "
    "what the kernel computes, as these lines that ran show: "
)
#: the remedies that read the part as a whole: its measured lines say where inside it to look
_LOOK_INSIDE = ("composite", "spread", "leaf", "cell-by-hand")
#: a composite no other remedy fits, whose lines were measured: start at them, no regions
_COMPOSITE_LINES_FIX = (
    "The hot lines show where its time goes ({lines}; see the report's hot lines for their "
    "ops): batch or move out of a loop what they repeat, and torch.compile it to fuse its "
    "small ops."
)


def _lines_text(lines: list[tuple[str, float]]) -> str:
    """``m.py:300 (1.4 ms), m.py:291 (0.7 ms)``.

    Example:
        >>> _lines_text([("m.py:300", 1.4), ("m.py:291", 0.7)])
        'm.py:300 (1.4 ms), m.py:291 (0.7 ms)'
    """
    return ", ".join(f"{where} ({fmt_ms(ms)})" for where, ms in lines)


def _padded_evidence(
    item: Advice, node: Mapping[str, Any], group: list | None, step: float
) -> float:
    """Evidence naming the padded convolutions (map, kernel, padding share, time); returns the
    share of the step in those that are their centre tap (a 1x1 convolution would be the same
    function: the part the saving is on), 0 without any."""
    convs = [c for layer in group or [node] for c in padded_convolutions(layer)]
    exact = [c for c in convs if (c.get("conv") or {}).get("centre_tap")]
    convs.sort(key=node_ms, reverse=True)
    for conv in convs[:3]:
        geometry = conv["conv"]
        size = "x".join(str(v) for v in geometry.get("input") or ())
        kernel = "x".join(str(v) for v in geometry.get("kernel") or ())
        item.evidence.append(
            f"{conv.get('path')}: a {kernel} kernel on {size} maps, "
            f"{100 * float(geometry['padding_share']):.0f}% of its multiply-adds on padding, "
            f"{fmt_ms(node_ms(conv))} per step"
            + (" (the 1x1 convolution of its centre weights is the same function)"
               if geometry.get("centre_tap") else "")
        )  # fmt: skip
    exact_ms = sum(node_ms(c) for c in exact)
    if len(exact) > 1 or (exact and len(convs) > 1):
        item.evidence.append(
            f"{len(exact)} of them are their centre tap: {fmt_ms(exact_ms)}, "
            f"{pct(exact_ms, step):.0f}% of the step, the part the saving is on"
        )
    return exact_ms / step


def _hooks_pct(estimate: Mapping[str, Any], step: float) -> float:
    """The module hooks' share of a detailed step (in %): what inflates small modules' rows
    (the sync audit and hot lines cost time too, but not inside one module's row more than its
    calls do).

    Example:
        >>> round(_hooks_pct({"calls_per_step": 30, "cost_us": 100.0}, step=12.0), 1)
        33.3
        >>> round(_hooks_pct({"calls_per_step": 30, "cost_us": 100.0, "source": "measured",
        ...                   "overhead_ms": 1.0}, step=12.0), 1)  # measured: at most the whole
        9.1
        >>> _hooks_pct({"overhead_pct": 50.0}, step=12.0)  # per-call cost unknown: the total
        50.0
    """
    cost_us, calls = estimate.get("cost_us"), estimate.get("calls_per_step")
    if cost_us is None or not calls:
        return float(estimate.get("overhead_pct") or 0.0)
    hooks_ms = float(calls) * float(cost_us) / 1e3
    if estimate.get("source") in ("measured", "window bound"):  # (part of the measured whole)
        hooks_ms = min(hooks_ms, float(estimate.get("overhead_ms") or hooks_ms))
    return 100.0 * hooks_ms / max(1e-9, step - hooks_ms)


def _fwd(node: Mapping[str, Any]) -> float:
    return center(node.get("forward_ms"))

"""Rule ``dominant-module``: one module, region or stack of identical layers takes >= 30% of the step.

A part that dominates only because it is recomputed on identical inputs (see the loop-invariant
rule) is left to that rule. The remedy depends on what the dominant part is, read from one table (:data:`REMEDIES`):
attention (fused SDPA, bf16), a stack of repeated layers (torch.compile; fewer or smaller
layers), linear algebra or matching (the batched torchdoctor.ops replacement), a leaf matmul
(Linear, GPT-2's Conv1D: bf16/TF32, shapes), a leaf embedding (sparse gradients), another leaf
module (torch.compile), anything else (regions inside it, torch.compile).

Example:
    >>> dominant_module({"step_ms": {"median": 0.0}, "tree": None})
    []
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torchdoctor.analyze.advice.base import (
    SPEEDUPS,
    Advice,
    amdahl_saving,
    center,
    fmt_ms,
    is_cuda,
    node_ms,
    pct,
    tree_step_ms,
    walk,
    with_saving,
)
from torchdoctor.analyze.advice.dominant_lines import NO_FACTS, LineFacts, line_facts
from torchdoctor.analyze.advice.dominant_stacks import candidates
from torchdoctor.analyze.advice.dominant_stacks import label as label_of
from torchdoctor.analyze.advice.ops_table import (  # noqa: F401 (OPS_FOR: re-exported)
    CONV_TYPES,
    EMBEDDING_TYPES,
    MATMUL_TYPES,
    OPS_FOR,
    RNN_CELL_TYPES,
    RNN_TYPES,
    ops_for,
)

THRESHOLD = 0.30
#: a composite node covering this much of the step is the model itself, not a diagnosis
WRAPPER = 0.80

_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)


def _is_attention(node: Mapping[str, Any]) -> bool:
    text = f"{node.get('type') or ''} {node.get('name') or ''}"
    if _ATTENTION.search(text):
        return True
    total = node_ms(node)
    attention = sum(
        node_ms(n)
        for n, _ in walk(node)
        if n is not node
        and _ATTENTION.search(f"{n.get('type') or ''} {n.get('name') or ''}")
        and not any(_ATTENTION.search(str(p)) for p in str(n.get("path", "")).split(".")[:-1])
    )
    return total > 0 and attention >= 0.5 * total


def _is_linalg(node: Mapping[str, Any]) -> bool:
    return bool(ops_for(f"{node.get('name') or ''} {node.get('type') or ''}"))


def _is_leaf(node: Mapping[str, Any]) -> bool:
    """A module with no module or region inside it (its own ops only)."""
    return node.get("kind") == "module" and not any(
        child.get("kind") in ("module", "region", "group") for child in node.get("children") or ()
    )


#: a composite whose own (self) time is below this share of it is explained by its parts
SPREAD_SELF = 0.3


def _self_share(node: Mapping[str, Any]) -> float:
    """The share of a composite's time that none of its parts explains ((self)); 1 for a leaf.

    Example:
        >>> node = {"total_ms": {"median": 10.0}, "children": [
        ...     {"kind": "module", "total_ms": {"median": 8.0}},
        ...     {"kind": "self", "total_ms": {"median": 2.0}}]}
        >>> _self_share(node)
        0.2
    """
    total = node_ms(node)
    parts = [c for c in node.get("children") or () if c.get("kind") != "self"]
    if total <= 0 or not parts:
        return 1.0
    return max(0.0, total - sum(node_ms(c) for c in parts)) / total


def _parts_text(node: Mapping[str, Any]) -> str:
    """Its three largest parts with their share of it.

    Example:
        >>> _parts_text({"total_ms": {"median": 10.0}, "children": [
        ...     {"kind": "module", "path": "m.h.0", "total_ms": {"median": 6.0}},
        ...     {"kind": "module", "path": "m.h.1", "total_ms": {"median": 3.0}}]})
        'm.h.0 60%, m.h.1 30%'
    """
    total = node_ms(node) or 1.0
    parts = sorted(
        (c for c in node.get("children") or () if c.get("kind") != "self"), key=node_ms,
        reverse=True,
    )[:3]
    return ", ".join(f"{label_of(c)} {pct(node_ms(c), total):.0f}%" for c in parts)


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


@dataclass(frozen=True)
class Remedy:
    """One kind of dominant part and what to do about it (a row of :data:`REMEDIES`).

    ``when(node, group, cuda)`` says whether it fits; ``title`` follows "<label> dominates the
    step: "; ``speedup`` names a :data:`SPEEDUPS` entry (None: no saving can be estimated);
    ``cause`` lets another rule's advice with the same remedy merge with this one.

    Example:
        >>> REMEDIES[1].name
        'attention'
    """

    name: str
    when: Callable[[Mapping[str, Any], list | None, bool], bool]
    title: str
    fix: str
    references: tuple[str, ...]
    speedup: str | None
    confidence: str = "medium"
    cause: str | None = None
    code: str | None = None


def _any_attention(node: Mapping[str, Any], group: list | None, cuda: bool) -> bool:
    return any(_is_attention(c) for c in group) if group else _is_attention(node)


#: the remedies, first match wins: a region compiled already, attention, RNN cells called per
#: time step or whole recurrent layers (alone or stacked), a layer stack, linear algebra /
#: matching, a leaf matmul, a convolution, a leaf embedding, any other leaf module, anything
#: else.
REMEDIES: tuple[Remedy, ...] = (
    Remedy(
        "compiled",
        lambda node, group, cuda: "OptimizedModule" in str(node.get("type") or ""),
        "it is compiled already: look inside its graph",
        "torch.compile runs it as one graph, so the tree cannot split it (its submodules have no "
        "rows). To see where its time goes, profile one run without torch.compile (the tree then "
        "shows its modules and lines) or its kernels with torch.profiler; to make the graph "
        "itself faster, `torchdoctor tune` measures mode='max-autotune' and, on CUDA, CUDA "
        "graphs (mode='reduce-overhead').",
        ("torch.compile", "torch.profiler", "torchdoctor tune"),
        None,
        confidence="low",
        cause="compiled-region",
    ),
    Remedy(
        "attention",
        _any_attention,
        "use fused attention (SDPA) and bf16",
        "Replace hand-written softmax(QK^T)V with torch.nn.functional.scaled_dot_product_attention "
        "(nn.MultiheadAttention uses it when need_weights=False); run it under "
        "torch.autocast(dtype=bfloat16).",
        ("torch.nn.functional.scaled_dot_product_attention", "seed 001"),
        "sdpa",
        cause="sdpa",
        code="out, _ = attn(q, k, v)                      # before\n"
        "out, _ = attn(q, k, v, need_weights=False)  # after: fused SDPA kernel",
    ),
    Remedy(
        "rnn-cell",
        lambda node, group, cuda: all(
            _is_leaf(m)
            and str(m.get("type")) in RNN_CELL_TYPES
            and float(m.get("calls_per_step") or 0.0) >= 8
            for m in group or [node]
        ),
        "one cell called per time step: run the sequence with nn.LSTM / nn.GRU",
        "The cell runs once per time step from a Python loop, each call a few small kernels "
        "and its own autograd nodes: feed the whole known sequence to nn.LSTM / nn.GRU / "
        "nn.RNN instead (one call over time; cuDNN's fused kernel on a GPU), and keep the cell "
        "only for steps that feed their own output back (autoregressive prediction). A cell "
        "shared by two stacked layers maps to nn.LSTM(num_layers=2).",
        ("torch.nn.LSTM", "torch.nn.GRU"),
        "rnn_sequence",
        code="for x in seq.split(1, dim=1):                    # before: one call per step\n"
        "    h, c = cell(x.squeeze(1), (h, c))\n"
        "out, (h, c) = lstm(seq.unsqueeze(-1), (h0, c0))  # after: nn.LSTM(batch_first=True)",
    ),
    Remedy(
        "recurrent",
        lambda node, group, cuda: all(
            _is_leaf(m) and str(m.get("type")) in RNN_TYPES for m in group or [node]
        ),
        "one fused recurrent kernel: fewer time steps, no padding",
        "nn.LSTM / nn.GRU / nn.RNN already run the whole sequence as one native kernel (cuDNN "
        "on a GPU, oneDNN on a CPU); torch.compile does not fuse it further. Its time is "
        "layers x time steps, run one after another, x the hidden size: pack padded batches "
        "(nn.utils.rnn.pack_padded_sequence) so padding is not computed, bucket or truncate "
        "long sequences, batch more sequences per step, and on a GPU run it under "
        "torch.autocast (cuDNN's half-precision kernels).",
        ("torch.nn.utils.rnn.pack_padded_sequence", "torch.autocast"),
        None,
    ),
    Remedy(
        "layer-stack",
        lambda node, group, cuda: bool(group),
        "compile the layer stack, or use fewer layers",
        "torch.compile the repeated layer (or the whole model) so each layer's small ops fuse; "
        "if quality allows, train a model with fewer or narrower layers.",
        ("torch.compile", "seed 001"),
        "compile_repeated",
        cause="torch.compile",
        code="model = torch.compile(model)",
    ),
    Remedy(
        "linear-algebra",
        lambda node, group, cuda: _is_linalg(node),
        "use the batched torchdoctor.ops replacement",
        "Replace per-sample linear algebra (explicit inverses, per-element loops, CPU "
        "assignment) with one batched, sync-free call: {ops}.",
        ("seed 000", "seed 003"),
        "ops_replacement",
    ),
    Remedy(
        "matmul",
        lambda node, group, cuda: _is_leaf(node) and str(node.get("type")) in MATMUL_TYPES,
        "it is one matmul: make the matmul cheaper",
        "Its time is the matrix multiply (tokens x in_features x out_features): run it in "
        "bf16 under torch.autocast (CUDA; TF32 for fp32), keep in/out features multiples of 64, "
        "and shrink the largest dimension (a vocabulary-sized output: tie it to the embedding, "
        "or compute the loss in chunks); fewer tokens per step also scale it down.",
        ("torch.autocast", "torch.set_float32_matmul_precision"),
        "bf16_autocast",
        cause="bf16-autocast",
        code='with torch.autocast(device_type="cuda", dtype=torch.bfloat16):\n'
        "    logits = model(x)",
    ),
    Remedy(
        "convolution",
        lambda node, group, cuda: _is_leaf(node) and str(node.get("type")) in CONV_TYPES,
        "it is one convolution: make the convolution cheaper",
        "Its time is the convolution kernel itself (torch.compile fuses the elementwise ops "
        "around it, not the convolution): use channels_last memory format for the model and "
        "its input (oneDNN / cuDNN's fastest layouts), bf16 under torch.autocast on a GPU, "
        "torch.backends.cudnn.benchmark=True for fixed input shapes on CUDA, and fewer "
        "channels or a smaller input if the model allows.",
        ("torch.channels_last", "torch.autocast", "torch.backends.cudnn.benchmark"),
        "channels_last",
        cause="channels_last",  # one advice with the engine-knobs channels_last entry
        code="model = model.to(memory_format=torch.channels_last)\n"
        "x = x.to(memory_format=torch.channels_last)",
    ),
    Remedy(
        "embedding",
        lambda node, group, cuda: _is_leaf(node) and str(node.get("type")) in EMBEDDING_TYPES,
        "an embedding lookup: shrink its table or its gradient",
        "An embedding is cheap forward; its cost is the dense gradient of the whole table in "
        "backward and the optimizer step over it: use nn.Embedding(sparse=True) with a sparse "
        "optimizer (torch.optim.SparseAdam), or a smaller vocabulary / embedding dimension.",
        ("torch.nn.Embedding", "torch.optim.SparseAdam"),
        None,
    ),
    Remedy(
        "leaf",
        lambda node, group, cuda: _is_leaf(node),
        "compile it to fuse its ops",
        "A single module without sub-modules: torch.compile it (or the model) to fuse its "
        "elementwise ops; check its input size and dtype.",
        ("torch.compile",),
        "compile",
        confidence="low",
        cause="torch.compile",
    ),
    Remedy(
        "spread",
        lambda node, group, cuda: _self_share(node) < SPREAD_SELF,
        "its time is spread over its parts: compile it",
        "The tree already shows inside it ({parts}) and none of them takes 30% of the step on "
        "its own: torch.compile the model to fuse their small ops, then look at the largest "
        "part's own row.",
        ("torch.compile",),
        "compile",
        confidence="low",
        cause="torch.compile",
        code="model = torch.compile(model)",
    ),
    Remedy(
        "composite",
        lambda node, group, cuda: True,
        "profile inside it and compile it",
        "Wrap its sub-steps in torchdoctor.region(...) to see where the time goes; "
        "torch.compile it to fuse its small ops.",
        ("torchdoctor.region", "torch.compile"),
        "compile",
        confidence="low",
        cause="torch.compile",
    ),
)


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
    attention) is not told to use it; a leaf whose measured lines are its matrix multiplies is
    a matmul, whatever its class."""
    paths = [str(n.get("path") or "") for n in (group or [node])]
    fused = facts.fused
    already = fused_anywhere or any(o == p or o.startswith(p + ".") for p in paths for o in fused)
    remedy = next(
        r for r in REMEDIES if r.when(node, group, cuda) and not (already and r.name == "attention")
    )
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
    tree = session.get("tree")
    if not tree or step <= 0:
        return []
    advice: list[Advice] = []
    estimate = (session.get("config") or {}).get("profiler_overhead") or {}
    overhead = _hooks_pct(estimate, step)
    cuda = is_cuda(session)
    facts = line_facts(session)
    knobs = (session.get("environment") or {}).get("knobs") or {}
    fused_anywhere = knobs.get("fused_attention") is True
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
        if bwd > 0:
            evidence.append(f"forward {fmt_ms(fwd)}, backward {fmt_ms(bwd)}")
        remedy = _remedy_for(node, group, cuda, facts, fused_anywhere)
        if remedy.name == "layer-stack":
            halve = amdahl_saving(step, fraction, SPEEDUPS["halve_layers"].low)
            evidence.append(f"halving the stack (needs retraining) would save ~{fmt_ms(halve)}")
        ops = ops_for(f"{node.get('name') or ''} {node.get('type') or ''}")
        named = str(node.get("type") or "") not in ("", label.rsplit(".", 1)[-1])
        # a leaf's type says what it is; so does a numbered child of the model ("2": which?)
        numbered = label.split(".", 1)[0].isdigit()
        leaf_type = (
            f" ({node.get('type')})" if not group and named and (_is_leaf(node) or numbered) else ""
        )
        item = Advice(
            rule="dominant-module",
            title=f"{label}{leaf_type} dominates the step: {remedy.title}",
            confidence=remedy.confidence,
            evidence=evidence,
            fix=remedy.fix.format(
                ops=", ".join(ops) if ops else "see torchdoctor.ops", parts=_parts_text(node)
            ),
            references=(ops if remedy.name == "linear-algebra" else []) + list(remedy.references),
            code=remedy.code,
            cause=remedy.cause,
        )
        speedup = remedy.speedup
        if remedy.name == "matmul" and not cuda:
            speedup = None  # bf16/TF32 tensor cores: no stated speedup for a CPU matmul
            item.heat = fraction
        if speedup is not None:
            with_saving(item, step, fraction, SPEEDUPS[speedup])
        else:
            item.heat = min(1.0, fraction)
        if overhead >= OVERHEAD_CAVEAT_PCT:
            item.evidence.append(
                f"the profiler's own hooks are ~{overhead:.0f}% of the step here (many small "
                "module calls): part of this time is the profiler's, not the model's"
            )
            item.confidence = "low"
        advice.append(item)
    return advice


def _hooks_pct(estimate: Mapping[str, Any], step: float) -> float:
    """The module hooks' share of a detailed step (in %): what inflates small modules' rows
    (the sync audit and hot lines cost time too, but not inside one module's row more than its
    calls do).

    Example:
        >>> round(_hooks_pct({"calls_per_step": 30, "cost_us": 100.0}, step=12.0), 1)
        33.3
        >>> _hooks_pct({"overhead_pct": 50.0}, step=12.0)  # per-call cost unknown: the total
        50.0
    """
    cost_us, calls = estimate.get("cost_us"), estimate.get("calls_per_step")
    if cost_us is None or not calls:
        return float(estimate.get("overhead_pct") or 0.0)
    hooks_ms = float(calls) * float(cost_us) / 1e3
    return 100.0 * hooks_ms / max(1e-9, step - hooks_ms)


def _fwd(node: Mapping[str, Any]) -> float:
    return center(node.get("forward_ms"))

"""Rule ``dominant-module``: one module, region or stack of identical layers takes >= 30% of the step.

A part that dominates only because it is recomputed on identical inputs (see the loop-invariant
rule) is left to that rule. The remedy depends on what the dominant part is: attention (fused SDPA, bf16), a stack of
repeated layers (torch.compile; fewer or smaller layers), linear algebra or matching (the
batched torchdoctor.ops replacement), anything else (torch.compile).

Example:
    >>> dominant_module({"step_ms": {"median": 0.0}, "tree": None})
    []
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import SPEEDUPS, Advice, amdahl_saving, pct, with_saving
from torchdoctor.session_read import center, fmt_ms, node_ms, step_ms, walk

THRESHOLD = 0.30
MIN_REPEATS = 4
#: a composite node covering this much of the step is the model itself, not a diagnosis
WRAPPER = 0.80

_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)
_LINALG = re.compile(
    r"chol|inverse|\binv\b|pinv|mahalanobis|whiten|covariance|\bcov|dpp|hungarian|assignment|"
    r"matching|sinkhorn|cdist|distance|solve|svd|eig|logdet|linalg",
    re.IGNORECASE,
)


#: name pattern -> the torchdoctor.ops calls that replace that kind of code
OPS_FOR: tuple[tuple[re.Pattern[str], list[str]], ...] = (
    (
        re.compile(r"chol|inverse|\binv\b|pinv|mahalanobis|whiten|solve", re.IGNORECASE),
        [
            "torchdoctor.ops.cholesky_factor",
            "torchdoctor.ops.whiten",
            "torchdoctor.ops.pairwise_mahalanobis",
        ],
    ),
    (
        re.compile(r"covariance|\bcov|logdet|spd|eig|svd", re.IGNORECASE),
        ["torchdoctor.ops.covariance", "torchdoctor.ops.spd_distance"],
    ),
    (
        re.compile(r"hungarian|assignment|matching|sinkhorn", re.IGNORECASE),
        ["torchdoctor.ops.linear_assignment", "torchdoctor.ops.sinkhorn"],
    ),
    (
        re.compile(r"dpp", re.IGNORECASE),
        ["torchdoctor.ops.dpp_greedy", "torchdoctor.ops.select_tokens_per_segment"],
    ),
    (
        re.compile(r"negative|mining|cdist|distance", re.IGNORECASE),
        ["torchdoctor.ops.two_stage_negatives", "torchdoctor.ops.pairwise_mahalanobis"],
    ),
)


def ops_for(name: str) -> list[str]:
    """The torchdoctor.ops calls suggested for a module/region name (empty when none fits).

    Example:
        >>> ops_for("hungarian_matching")
        ['torchdoctor.ops.linear_assignment', 'torchdoctor.ops.sinkhorn']
    """
    found: list[str] = []
    for pattern, ops in OPS_FOR:
        if pattern.search(name):
            found.extend(op for op in ops if op not in found)
    return found


def _label(node: Mapping[str, Any]) -> str:
    return str(node.get("path") or node.get("name") or "?")


def _repeated_group(node: Mapping[str, Any]) -> tuple[list[Mapping], str] | None:
    """The largest group of >= MIN_REPEATS same-type module children, and a label for it."""
    groups: dict[str, list[Mapping]] = {}
    for child in node.get("children") or ():
        if child.get("kind") == "module" and child.get("type"):
            groups.setdefault(str(child["type"]), []).append(child)
    best = max(groups.values(), key=lambda g: sum(node_ms(c) for c in g), default=[])
    if len(best) < MIN_REPEATS:
        return None
    first, last = _label(best[0]), _label(best[-1])
    prefix = first.rsplit(".", 1)[0] if "." in first else ""
    first_idx, last_idx = first.rsplit(".", 1)[-1], last.rsplit(".", 1)[-1]
    name = f"{prefix}[{first_idx}-{last_idx}]" if prefix else f"{first}..{last}"
    return best, name


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
    return bool(_LINALG.search(f"{node.get('type') or ''} {node.get('name') or ''}"))


def _candidates(tree: Mapping[str, Any], step: float) -> list[tuple[Mapping, str, list | None]]:
    """Leaf-most nodes (or repeated groups) at or above the threshold."""
    found: list[tuple[Mapping, str, list | None]] = []

    def visit(node: Mapping[str, Any]) -> bool:
        """Returns True when this node or a descendant was recorded."""
        below = False
        for child in node.get("children") or ():
            below = visit(child) or below
        if below:
            return True
        if node.get("kind") not in ("module", "region", "root"):
            return False
        group = _repeated_group(node)
        if group and sum(node_ms(c) for c in group[0]) >= THRESHOLD * step:
            found.append((node, group[1], group[0]))
            return True
        wrapper = bool(node.get("children")) and node_ms(node) >= WRAPPER * step
        if node.get("kind") != "root" and not wrapper and node_ms(node) >= THRESHOLD * step:
            found.append((node, _label(node), None))
            return True
        return False

    visit(tree)
    return _merge_sibling_layers(found)


def _merge_sibling_layers(found: list) -> list:
    """Same-type sibling modules that each dominate (``layers.0``, ``layers.1``) are one layer
    stack: one advice for the group, not one per layer."""
    by_parent: dict[tuple[str, str], list] = {}
    for entry in found:
        node, _, group = entry
        path = str(node.get("path") or "")
        if group is None and node.get("kind") == "module" and node.get("type") and "." in path:
            by_parent.setdefault((path.rsplit(".", 1)[0], str(node["type"])), []).append(entry)
    merged: list = []
    done: set[int] = set()
    for entry in found:
        node = entry[0]
        path = str(node.get("path") or "")
        key = (path.rsplit(".", 1)[0], str(node.get("type"))) if "." in path else None
        siblings = by_parent.get(key) if key else None
        if not siblings or len(siblings) < 2:
            merged.append(entry)
        elif id(siblings[0]) not in done:
            done.add(id(siblings[0]))
            nodes = [e[0] for e in siblings]
            first, last = _label(nodes[0]), _label(nodes[-1])
            prefix, a, b = key[0], first.rsplit(".", 1)[-1], last.rsplit(".", 1)[-1]
            merged.append((nodes[0], f"{prefix}[{a}-{b}]", nodes))
    return merged


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


def dominant_module(session: Mapping[str, Any]) -> list[Advice]:
    """Advice for each leaf-most module/region/layer stack taking >= 30% of the step.

    Example:
        >>> tree = {"kind": "root", "path": "", "total_ms": {"median": 10.0}, "children": [
        ...     {"kind": "module", "path": "head", "name": "head", "type": "Linear",
        ...      "total_ms": {"median": 8.0}, "children": []}]}
        >>> dominant_module({"step_ms": {"median": 10.0}, "tree": tree})[0].rule
        'dominant-module'
    """
    step = step_ms(session)
    tree = session.get("tree")
    if not tree or step <= 0:
        return []
    advice: list[Advice] = []
    estimate = (session.get("config") or {}).get("profiler_overhead") or {}
    overhead = estimate.get("overhead_pct") or 0.0
    for node, label, group in _candidates(tree, step):
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
            is_attention = any(_is_attention(c) for c in group)
        else:
            is_attention = _is_attention(node)
        fwd = sum(_fwd(c) for c in group) if group else _fwd(node)
        bwd = part_ms - fwd
        if bwd > 0:
            evidence.append(f"forward {fmt_ms(fwd)}, backward {fmt_ms(bwd)}")
        if is_attention:
            item = Advice(
                rule="dominant-module",
                title=f"{label} dominates the step: use fused attention (SDPA) and bf16",
                confidence="medium",
                evidence=evidence,
                fix="Replace hand-written softmax(QK^T)V with "
                "torch.nn.functional.scaled_dot_product_attention (nn.MultiheadAttention "
                "uses it when need_weights=False); run it under torch.autocast(dtype=bfloat16).",
                references=["torch.nn.functional.scaled_dot_product_attention", "seed 001"],
                code="out, _ = attn(q, k, v)                      # before\n"
                "out, _ = attn(q, k, v, need_weights=False)  # after: fused SDPA kernel",
            )
            with_saving(item, step, fraction, SPEEDUPS["sdpa"])
        elif group:
            halve = amdahl_saving(step, fraction, SPEEDUPS["halve_layers"].low)
            evidence.append(f"halving the stack (needs retraining) would save ~{fmt_ms(halve)}")
            item = Advice(
                rule="dominant-module",
                title=f"{label} dominates the step: compile the layer stack, or use fewer layers",
                confidence="medium",
                evidence=evidence,
                fix="torch.compile the repeated layer (or the whole model) so each layer's "
                "small ops fuse; if quality allows, train a model with fewer or narrower layers.",
                references=["torch.compile", "seed 001"],
                code="model = torch.compile(model)",
            )
            with_saving(item, step, fraction, SPEEDUPS["compile_repeated"])
        elif _is_linalg(node):
            ops = ops_for(f"{node.get('name') or ''} {node.get('type') or ''}")
            item = Advice(
                rule="dominant-module",
                title=f"{label} dominates the step: use the batched torchdoctor.ops replacement",
                confidence="medium",
                evidence=evidence,
                fix="Replace per-sample linear algebra (explicit inverses, per-element loops, "
                "CPU assignment) with one batched, sync-free call: "
                + (", ".join(ops) if ops else "see torchdoctor.ops")
                + ".",
                references=(ops or ["torchdoctor.ops"]) + ["seed 000", "seed 003"],
            )
            with_saving(item, step, fraction, SPEEDUPS["ops_replacement"])
        else:
            item = Advice(
                rule="dominant-module",
                title=f"{label} dominates the step: profile inside it and compile it",
                confidence="low",
                evidence=evidence,
                fix="Wrap its sub-steps in torchdoctor.region(...) to see where the time goes; "
                "torch.compile it to fuse its small ops.",
                references=["torchdoctor.region", "torch.compile"],
            )
            with_saving(item, step, fraction, SPEEDUPS["compile"])
        if overhead >= OVERHEAD_CAVEAT_PCT:
            item.evidence.append(
                f"the profiler's own hooks are ~{overhead:.0f}% of the step here (many small "
                "module calls): part of this time is the profiler's, not the model's"
            )
            item.confidence = "low"
        advice.append(item)
    return advice


def _fwd(node: Mapping[str, Any]) -> float:
    return center(node.get("forward_ms"))

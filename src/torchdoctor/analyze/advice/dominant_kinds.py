"""What a dominant part of the tree is, read from its node: attention, linear algebra, a leaf, a
composite explained by its parts, one mostly made of leaf convolutions or matmuls, convolutions
on maps about their kernel's size, a recurrent cell of the user's own. The predicates of the
``dominant-module`` remedies (:mod:`torchdoctor.analyze.advice.dominant_remedies`).

Example:
    >>> is_leaf({"kind": "module", "children": []})
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import center, node_ms, walk
from torchdoctor.analyze.advice.dropout_share import DROPOUT_TYPES
from torchdoctor.analyze.advice.ops_table import (
    CONV_TYPES,
    MATMUL_TYPES,
    RNN_CELL_TYPES,
    RNN_TYPES,
    ops_for,
)

_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)
#: module types whose forward only calls their children in turn (their (self) row is that
#: loop and the children's hook calls, never code of their own)
CONTAINERS = frozenset({"Sequential"})


def _names_attention(node: Mapping[str, Any]) -> bool:
    """Named attention, and not a projection (the seq2seq tutorial's ``attn`` Linear computes
    the attention weights from its input: no softmax(QK^T)V for SDPA to take); or a module with
    its own fused-attention switch left off (x-transformers' ``Attend``: ``attention_switch``)."""
    switch = node.get("attention_switch")
    if isinstance(switch, Mapping) and not str(switch.get("attribute")).startswith("config."):
        return True  # (a model's config switch sits on the whole model: not its attention)
    return str(node.get("type")) not in MATMUL_TYPES and bool(
        _ATTENTION.search(f"{node.get('type') or ''} {node.get('name') or ''}"))


def _holds_recurrent(node: Mapping[str, Any]) -> bool:
    """A recurrent layer inside: an RNN decoder with attention (the seq2seq tutorial's
    ``AttnDecoderRNN``), whose time is its GRU, embedding and output layer, not attention."""
    return any(str(n.get("type")) in RNN_TYPES or str(n.get("type")) in RNN_CELL_TYPES
               for n, _ in walk(node))  # fmt: skip


def _is_stack(node: Mapping[str, Any]) -> bool:
    """An attention-named node holding attention modules (x-transformers' ``attn_layers``, a
    Hugging Face ``BertAttention`` around its ``BertSelfAttention``): their parent, not one."""
    return any(
        n is not node and _ATTENTION.search(str(n.get("type") or "")) for n, _ in walk(node)
    )


def attention_parts(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The outermost attention modules in ``node`` (itself included), by name or type. A part
    named like attention that holds attention modules (a layer stack called ``attn_layers``) is
    looked through, so a stack's feed-forward layers are never counted as attention; an
    attention module's own attention-named children (``attn_dropout``) are counted through it.

    Example:
        >>> def n(name, type="", children=()):
        ...     return {"name": name, "path": name, "type": type, "children": list(children)}
        >>> stack = n("attn_layers", "Decoder", [n("layers.0", "Attention",
        ...           [n("attn_dropout", "Dropout")]), n("layers.1", "FeedForward")])
        >>> [p["name"] for p in attention_parts(stack)]
        ['layers.0']
    """
    found: list[Mapping[str, Any]] = []

    def visit(part: Mapping[str, Any]) -> None:
        if _names_attention(part) and not _is_stack(part) and not _holds_recurrent(part):
            found.append(part)
            return
        for child in part.get("children") or ():
            visit(child)

    visit(node)
    return found


def is_attention(node: Mapping[str, Any]) -> bool:
    """Attention by its name or type, or a composite mostly made of attention parts.

    Example:
        >>> is_attention({"type": "CausalSelfAttention", "name": "attn"})
        True
        >>> gru = {"type": "GRU", "name": "gru", "children": []}
        >>> is_attention({"type": "AttnDecoderRNN", "name": "decoder", "children": [gru]})
        False
    """
    if _names_attention(node) and not _holds_recurrent(node):
        return True
    total = node_ms(node)
    attention = sum(node_ms(n) for n in attention_parts(node))
    return total > 0 and attention >= 0.5 * total


def attention_core_ms(node: Mapping[str, Any], group: list | None = None) -> float:
    """The time the fused attention kernel replaces in ``node`` (or each layer of ``group``):
    its outermost attention parts, less their projections (Linear and alike: SDPA leaves them
    as they are). The SDPA speedup applies to this, not to the whole layer or stack (minGPT's
    chargpt: 650 of the stack's 1,854 ms; the MLPs, the norms and the projections are the rest).

    Example:
        >>> def n(name, ms, type="", children=()):
        ...     return {"name": name, "path": name, "type": type,
        ...             "total_ms": {"median": ms}, "children": list(children)}
        >>> attn = n("h.0.attn", 10.0, "CausalSelfAttention",
        ...          [n("h.0.attn.c_attn", 3.0, "Linear"), n("h.0.attn.drop", 2.0, "Dropout")])
        >>> attention_core_ms(n("h.0", 30.0, "Block", [attn, n("h.0.mlp", 20.0, "MLP")]))
        7.0
    """
    total = 0.0
    for layer in group or [node]:
        for part in attention_parts(layer):
            projections = sum(
                node_ms(c) for c in part.get("children") or () if c.get("type") in MATMUL_TYPES
            )
            total += max(0.0, node_ms(part) - projections)
    return total


#: why a CPU run's fused-attention remedy states a bound, not a saving
CPU_DROPOUT_NOTE = (
    "its attention runs dropout in training: on a CPU, scaled_dot_product_attention with "
    "dropout_p > 0 runs its unfused math path, so no saving is stated (Karpathy's "
    "ng-video-lecture gpt.py, dropout 0.2: SDPA saved 1-4 ms of the 98 ms its attention parts "
    "took); measure it on your step"
)


def dropout_ran_under(tree: Mapping[str, Any] | None, owners: Any) -> bool:
    """A dropout module ran in training (it has a backward) inside one of the nodes whose paths
    are ``owners`` (the modules owning a hand-written attention's measured lines).

    Example:
        >>> drop = {"type": "Dropout", "path": "h.0.attn.drop", "backward_ms": {"mean": 0.1}}
        >>> attn = {"path": "h.0.attn", "children": [drop]}
        >>> tree = {"path": "", "children": [attn]}
        >>> dropout_ran_under(tree, ["h.0.attn"]), dropout_ran_under(tree, [""])
        (True, False)
    """
    wanted = {o for o in owners or () if o}
    return any(
        inner.get("type") in DROPOUT_TYPES and center(inner.get("backward_ms")) > 0
        for node, _ in walk(tree) if node.get("path") in wanted
        for inner, _ in walk(node)
    )


def attention_dropout_ran(node: Mapping[str, Any], group: list | None = None) -> bool:
    """A dropout module inside the attention parts of ``node`` (or of each layer of ``group``)
    ran in training: it has a backward (in eval, dropout returns its input and adds no node).
    On a CPU, scaled_dot_product_attention with dropout in training runs its unfused math path.

    Example:
        >>> drop = {"type": "Dropout", "backward_ms": {"median": 0.1}, "children": []}
        >>> attention_dropout_ran({"name": "attn", "type": "Head", "children": [drop]})
        True
    """
    for layer in group or [node]:
        for part in attention_parts(layer):
            for inner, _ in walk(part):
                if inner.get("type") in DROPOUT_TYPES and center(inner.get("backward_ms")) > 0:
                    return True
    return False


def is_linalg(node: Mapping[str, Any]) -> bool:
    """Named after linear algebra or matching that torchdoctor.ops batches.

    Example:
        >>> is_linalg({"name": "hungarian_match", "type": ""}), is_linalg({"name": "mlp"})
        (True, False)
    """
    return bool(ops_for(f"{node.get('name') or ''} {node.get('type') or ''}"))


def is_leaf(node: Mapping[str, Any]) -> bool:
    """A module with no module or region inside it (its own ops only).

    Example:
        >>> is_leaf({"kind": "module", "children": [{"kind": "self"}]})
        True
    """
    return node.get("kind") == "module" and not any(
        child.get("kind") in ("module", "region", "group") for child in node.get("children") or ()
    )


#: a composite whose own (self) time is below this share of it is explained by its parts
SPREAD_SELF = 0.3


def self_share(node: Mapping[str, Any]) -> float:
    """The share of a composite's time that none of its parts explains ((self)); 1 for a leaf.

    Example:
        >>> node = {"total_ms": {"median": 10.0}, "children": [
        ...     {"kind": "module", "total_ms": {"median": 8.0}},
        ...     {"kind": "self", "total_ms": {"median": 2.0}}]}
        >>> self_share(node)
        0.2
    """
    total = node_ms(node)
    parts = [c for c in node.get("children") or () if c.get("kind") != "self"]
    if total <= 0 or not parts:
        return 1.0
    return max(0.0, total - sum(node_ms(c) for c in parts)) / total


#: a composite with at least this share of its time in leaf convolutions (or matmuls) is told
#: to make those cheaper, not to compile: torch.compile fuses the ops around them, not them
HEAVY_LEAVES = 0.6


def leaf_share(node: Mapping[str, Any], types: frozenset[str] | set[str]) -> float:
    """The share of a composite's time in its leaf modules of ``types`` (0 for a leaf).

    Example:
        >>> conv = {"kind": "module", "type": "Conv2d", "total_ms": {"median": 7.0}, "children": []}
        >>> act = {"kind": "module", "type": "ReLU", "total_ms": {"median": 3.0}, "children": []}
        >>> leaf_share({"kind": "module", "total_ms": {"median": 10.0}, "children": [conv, act]},
        ...            {"Conv2d"})
        0.7
    """
    total = node_ms(node)
    if total <= 0 or is_leaf(node):
        return 0.0
    inside = sum(
        node_ms(n) for n, _ in walk(node) if n is not node and is_leaf(n) and n.get("type") in types
    )
    return min(1.0, inside / total)


#: a convolution with at least this share of its (output, tap) pairs on the zero padding
#: computes mostly zeros (a 3x3 kernel on a 2x2 map: 56%; on a 1x1 map: 89%)
PADDED = 0.5


def padded_convolutions(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The convolutions in ``node`` (or ``node`` itself) whose input maps are so small that at
    least :data:`PADDED` of their multiply-adds read zero padding (``node["conv"]``: the
    geometry the recorder read at their first call, ``collect/conv_geometry.py``).

    Example:
        >>> conv = {"kind": "module", "path": "l4.conv", "children": [],
        ...         "conv": {"padding_share": 0.8889, "centre_tap": True}}
        >>> [n["path"] for n in padded_convolutions({"kind": "module", "children": [conv]})]
        ['l4.conv']
    """
    return [
        n for n, _ in walk(node)
        if float((n.get("conv") or {}).get("padding_share") or 0.0) >= PADDED
    ]  # fmt: skip


def padded_share(node: Mapping[str, Any]) -> float:
    """The share of ``node``'s time in :func:`padded_convolutions`.

    Example:
        >>> conv = {"kind": "module", "children": [], "total_ms": {"median": 6.0},
        ...         "conv": {"padding_share": 0.56}}
        >>> padded_share({"kind": "module", "total_ms": {"median": 8.0}, "children": [conv]})
        0.75
    """
    total = node_ms(node)
    return min(1.0, sum(node_ms(n) for n in padded_convolutions(node)) / total) if total else 0.0


def any_attention(node: Mapping[str, Any], group: list | None, cuda: bool) -> bool:
    """Any layer of the group (or the node) is attention.

    Example:
        >>> any_attention({"name": "mlp"}, [{"name": "attn"}], cuda=False)
        True
    """
    return any(is_attention(c) for c in group) if group else is_attention(node)


_CELL = re.compile(r"cell", re.IGNORECASE)
#: a cell called at least this many times per step runs once per time step of a loop
CELL_CALLS = 8


def is_cell_by_hand(node: Mapping[str, Any]) -> bool:
    """A recurrent cell of the user's own: a module whose type or name says cell (makemore's
    ``GRUCell``, an ``lstm_cell``), called at least :data:`CELL_CALLS` times per step, whose
    gates are linear layers (or its own matmuls: a leaf), with no convolution inside (a
    ConvLSTM cell has no sequence layer in torch). torch's own cells are leaves of
    ``RNN_CELL_TYPES``, told apart before this.

    Example:
        >>> gate = {"kind": "module", "type": "Linear", "children": []}
        >>> cell = {"kind": "module", "type": "GRUCell", "name": "cell", "calls_per_step": 16,
        ...         "children": [gate, dict(gate), {"kind": "self"}]}
        >>> is_cell_by_hand(cell), is_cell_by_hand({**cell, "calls_per_step": 1})
        (True, False)
    """
    if not _CELL.search(f"{node.get('type') or ''} {node.get('name') or ''}"):
        return False
    if float(node.get("calls_per_step") or 0.0) < CELL_CALLS:
        return False
    leaves = [str(n.get("type")) for n, _ in walk(node) if n is not node and is_leaf(n)]
    if any(t in CONV_TYPES for t in leaves):
        return False
    return is_leaf(node) or any(t in MATMUL_TYPES for t in leaves)

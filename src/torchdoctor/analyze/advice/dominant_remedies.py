"""The remedies of the ``dominant-module`` rule: one table (:data:`REMEDIES`), first match wins,
each row a kind of dominant part (attention, RNN cells per time step, a layer stack, linear
algebra, a leaf matmul or convolution, a composite whose time is in its convolutions or matmuls,
anything else) with its title, fix and the cause it shares with other rules.

Example:
    >>> [r.name for r in REMEDIES][:3]
    ['compiled', 'attention', 'rnn-cell']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torchdoctor.analyze.advice.base import node_ms, walk
from torchdoctor.analyze.advice.hot_lines_cures import SPARSE_LAYOUT_CURE
from torchdoctor.analyze.advice.ops_table import (
    CONV_TYPES,
    EMBEDDING_TYPES,
    MATMUL_TYPES,
    RNN_CELL_TYPES,
    RNN_TYPES,
    ops_for,
)

_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)


def is_attention(node: Mapping[str, Any]) -> bool:
    """Attention by its name or type, or a composite mostly made of attention parts.

    Example:
        >>> is_attention({"type": "CausalSelfAttention", "name": "attn"})
        True
    """
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
        for part, _ in walk(layer):
            text = f"{part.get('type') or ''} {part.get('name') or ''}"
            path = str(part.get("path") or "").split(".")[:-1]
            if not _ATTENTION.search(text) or any(_ATTENTION.search(p) for p in path):
                continue  # (an attention part's own children are counted through it)
            projections = sum(
                node_ms(c) for c in part.get("children") or () if c.get("type") in MATMUL_TYPES
            )
            total += max(0.0, node_ms(part) - projections)
    return total


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


#: what makes convolutions cheaper (a leaf convolution, a composite made of them)
_CONV_CURE = (
    "use channels_last memory format for the model and its input (oneDNN / cuDNN's fastest "
    "layouts), bf16 under torch.autocast on a GPU, torch.backends.cudnn.benchmark=True for "
    "fixed input shapes on CUDA, and fewer channels or a smaller input if the model allows."
)
_CONV_REST = (("torch.channels_last", "torch.autocast", "torch.backends.cudnn.benchmark"),
              "channels_last")  # fmt: skip
_CONV_CODE = (
    "model = model.to(memory_format=torch.channels_last)\n"
    "x = x.to(memory_format=torch.channels_last)"
)

#: the remedies, first match wins: a region compiled already, attention, RNN cells called per
#: time step or whole recurrent layers (alone or stacked), convolutions on maps about their
#: kernel's size (mostly padding), a layer stack, linear algebra /
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
        any_attention,
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
            is_leaf(m)
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
            is_leaf(m) and str(m.get("type")) in RNN_TYPES for m in group or [node]
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
    Remedy(  # (its saving: the convolutions that are their centre tap, dominant.py)
        "padded-convolutions",
        lambda node, group, cuda: all(padded_share(m) >= 0.5 for m in group or [node]),
        "its convolutions run on maps smaller than their kernels: most of their work is padding",
        "Most of its time is convolutions whose input feature maps are about the size of their "
        "kernels or smaller, so most of their multiply-adds, forward and backward, read the "
        "zero padding: an ImageNet-shaped network on small images (torchvision's ResNet on "
        "28x28 or 32x32 inputs brings its last stage to 1x1 maps). On a 1x1 map a kxk "
        "convolution is the 1x1 convolution of its centre weights, the same function: replace "
        "those layers by it. To give the last stages larger maps instead (more compute, "
        "usually better accuracy on small images), use a small-image stem (conv1 = 3x3 stride "
        "1 and no max-pool) or drop the last stage.",
        ("torch.nn.Conv2d",),
        "centre_tap",
        cause="padded-convolutions",
        code="def centre_tap(conv):  # a kxk convolution on 1x1 maps, as the 1x1 one it is\n"
        "    k = conv.kernel_size[0] // 2\n"
        "    one = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride,\n"
        "                          groups=conv.groups, bias=conv.bias is not None)\n"
        "    one.weight.data.copy_(conv.weight.data[:, :, k:k + 1, k:k + 1])\n"
        "    if conv.bias is not None:\n"
        "        one.bias.data.copy_(conv.bias.data)\n"
        "    return one\n"
        "model.layer4[1].conv1 = centre_tap(model.layer4[1].conv1)",
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
        lambda node, group, cuda: is_linalg(node),
        "use the batched torchdoctor.ops replacement",
        "Replace per-sample linear algebra (explicit inverses, per-element loops, CPU "
        "assignment) with one batched, sync-free call: {ops}.",
        ("seed 000", "seed 003"),
        "ops_replacement",
    ),
    Remedy(
        "matmul",
        lambda node, group, cuda: is_leaf(node) and str(node.get("type")) in MATMUL_TYPES,
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
    Remedy(  # (chosen from the measured lines, which name a sparse operand: dominant.py)
        "sparse-matmul",
        lambda node, group, cuda: False,
        "its time is sparse matrix multiplies: change the sparse layout",
        "Its time is matrix multiplies with a sparse operand (a graph's adjacency, bag-of-words "
        "features). " + SPARSE_LAYOUT_CURE,
        ("torch.Tensor.to_sparse_csr", "torch.utils.benchmark"),
        None,
        confidence="medium",
        cause="sparse-layout",
        code="adj = adj.to_sparse_csr()  # once, where the sparse tensor is built",
    ),
    Remedy(
        "convolution",
        lambda node, group, cuda: is_leaf(node) and str(node.get("type")) in CONV_TYPES,
        "it is one convolution: make the convolution cheaper",
        "Its time is the convolution kernel itself (torch.compile fuses the elementwise ops "
        "around it, not the convolution): " + _CONV_CURE,
        *_CONV_REST,
        cause="channels_last",  # one advice with the engine-knobs channels_last entry
        code=_CONV_CODE,
    ),
    Remedy(
        "embedding",
        lambda node, group, cuda: is_leaf(node) and str(node.get("type")) in EMBEDDING_TYPES,
        "an embedding lookup: shrink its table or its gradient",
        "An embedding is cheap forward; its cost is the dense gradient of the whole table in "
        "backward and the optimizer step over it: use nn.Embedding(sparse=True) with a sparse "
        "optimizer (torch.optim.SparseAdam), or a smaller vocabulary / embedding dimension.",
        ("torch.nn.Embedding", "torch.optim.SparseAdam"),
        None,
    ),
    Remedy(
        "leaf",
        lambda node, group, cuda: is_leaf(node),
        "compile it to fuse its ops",
        "A single module without sub-modules: torch.compile it (or the model) to fuse its "
        "elementwise ops; check its input size and dtype.",
        ("torch.compile",),
        "compile",
        confidence="low",
        cause="torch.compile",
    ),
    Remedy(
        "convolutions",
        lambda node, group, cuda: leaf_share(node, CONV_TYPES) >= HEAVY_LEAVES,
        "its time is in its convolutions: make them cheaper",
        "The tree shows inside it ({parts}): most of its time is its convolution kernels, "
        "which torch.compile does not fuse (it fuses the elementwise ops around them): "
        + _CONV_CURE,
        *_CONV_REST,
        cause="channels_last",
        code=_CONV_CODE,
    ),
    Remedy(
        "matmuls",
        lambda node, group, cuda: leaf_share(node, MATMUL_TYPES) >= HEAVY_LEAVES,
        "its time is in its matrix multiplies: make them cheaper",
        "The tree shows inside it ({parts}): most of its time is its linear layers' matrix "
        "multiplies, which torch.compile does not speed up: run them in bf16 under "
        "torch.autocast (CUDA; TF32 for fp32), keep features multiples of 64, and shrink the "
        "largest dimension or the tokens per step if the model allows.",
        ("torch.autocast", "torch.set_float32_matmul_precision"),
        "bf16_autocast",
        cause="bf16-autocast",
        code='with torch.autocast(device_type="cuda", dtype=torch.bfloat16):\n    out = model(x)',
    ),
    Remedy(
        "spread",
        lambda node, group, cuda: self_share(node) < SPREAD_SELF,
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

"""The remedies of the ``dominant-module`` rule: one table (:data:`REMEDIES`), first match wins,
each row a kind of dominant part (attention, RNN cells per time step, a layer stack, linear
algebra, a leaf matmul or convolution, a composite whose time is in its convolutions or matmuls,
anything else) with its title, fix and the cause it shares with other rules.

Example:
    >>> [r.name for r in REMEDIES][:3]
    ['compiled', 'attention', 'rnn-cell']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torchdoctor.analyze.advice.base import CHANNELS_LAST_VIEW
from torchdoctor.analyze.advice.dominant_kinds import (
    CONTAINERS,
    HEAVY_LEAVES,
    SPREAD_SELF,
    any_attention,
    is_cell_by_hand,
    is_leaf,
    is_linalg,
    leaf_share,
    padded_share,
    self_share,
)
from torchdoctor.analyze.advice.hot_lines_cures import SPARSE_LAYOUT_CURE
from torchdoctor.analyze.advice.ops_table import (
    CONV_TYPES,
    EMBEDDING_TYPES,
    MATMUL_TYPES,
    RNN_CELL_TYPES,
    RNN_TYPES,
)
from torchdoctor.session_read import TORCHSCRIPT, walk


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


#: what makes convolutions cheaper (a leaf convolution, a composite made of them)
_CONV_CURE = (
    "use channels_last memory format for the model and its input (oneDNN / cuDNN's fastest "
    "layouts), bf16 under torch.autocast (on a GPU, or a CPU with bf16 units), "
    "torch.backends.cudnn.benchmark=True for "
    "fixed input shapes on CUDA, and fewer channels or a smaller input if the model allows."
    + CHANNELS_LAST_VIEW
)
_CONV_REST = (("torch.channels_last", "torch.autocast", "torch.backends.cudnn.benchmark"),
              "channels_last")  # fmt: skip
_CONV_CODE = (
    "model = model.to(memory_format=torch.channels_last)\n"
    "x = x.to(memory_format=torch.channels_last)"
)

#: the attention remedy's snippet where an nn.MultiheadAttention runs under the part
MHA_SDPA_CODE = (
    "out, _ = attn(q, k, v)                      # before\n"
    "out, _ = attn(q, k, v, need_weights=False)  # after: fused SDPA kernel"
)
#: ... and where none does: the attention is the model's own matmuls and softmax (vit-pytorch's
#: Attention was shown the need_weights=False snippet; it has no nn.MultiheadAttention to pass it)
HAND_WRITTEN_SDPA_CODE = (
    "attn = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)   # before\n"
    "out = dropout(attn) @ v\n"
    "out = F.scaled_dot_product_attention(q, k, v, scale=scale,  # after: one fused kernel\n"
    "                                     dropout_p=p if self.training else 0.0)"
)


def attention_code(parts: list[Mapping[str, Any]]) -> str:
    """The attention remedy's snippet: ``need_weights=False`` where an ``nn.MultiheadAttention``
    runs under the parts, else the hand-written attention rewritten as one SDPA call.

    Example:
        >>> mha = {"type": "MultiheadAttention"}
        >>> "need_weights" in attention_code([{"type": "Block", "children": [mha]}])
        True
        >>> attention_code([{"type": "Attention", "children": [{"type": "Softmax"}]}]).split()[-1]
        '0.0)'
    """
    mha = any(str(n.get("type")) == "MultiheadAttention" for part in parts for n, _ in walk(part))
    return MHA_SDPA_CODE if mha else HAND_WRITTEN_SDPA_CODE


#: the remedies, first match wins: a region compiled already, attention, RNN cells called per
#: time step (torch's or the user's own) or whole recurrent layers (alone or stacked), convolutions on maps about their
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
        code=MHA_SDPA_CODE,
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
        "only for steps that feed their own output back (autoregressive prediction). Two "
        "cells stacked (the second fed the first's output) map to nn.LSTM(num_layers=2).",
        ("torch.nn.LSTM", "torch.nn.GRU"),
        "rnn_sequence",
        cause="rnn-sequence",  # (two stacked cells: one nn.LSTM(num_layers=2), one advice)
        code="for x in seq.split(1, dim=1):                    # before: one call per step\n"
        "    h, c = cell(x.squeeze(1), (h, c))\n"
        "out, (h, c) = lstm(seq.unsqueeze(-1), (h0, c0))  # after: nn.LSTM(batch_first=True)",
    ),
    Remedy(
        "cell-by-hand",
        lambda node, group, cuda: all(is_cell_by_hand(m) for m in group or [node]),
        "a recurrent cell of your own called once per time step: run the sequence with "
        "nn.RNN / nn.GRU / nn.LSTM if it is one, else compile the cell",
        "The cell runs once per time step from a Python loop, each call a few small matmuls "
        "and gate ops with their own autograd nodes (inside it: {parts}). If it computes an "
        "Elman RNN (tanh of one linear map of the input and the state), a GRU or an LSTM, "
        "nn.RNN / nn.GRU / nn.LSTM run the whole known sequence in one call (oneDNN on a "
        "CPU, cuDNN's fused kernel on a GPU); their equations can differ from yours in detail "
        "(nn.GRU applies the reset gate after the hidden state's matmul): retrain and compare. "
        "Otherwise torch.compile the cell so its gates fuse. Keep a loop over time only where "
        "a step feeds its own output back (sampling).",
        ("torch.nn.RNN", "torch.nn.GRU", "torch.nn.LSTM", "torch.compile"),
        "cell_by_hand",
        code="for t in range(T):                          # before: one cell call per step\n"
        "    h = self.cell(x[:, t], h)\n"
        "out, h = self.gru(x, h0)                   # after: nn.GRU(n_in, n_hidden, "
        "batch_first=True)",
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
        "compile the layer stack",
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
        cause="embedding-gradient",  # one advice with the embedding-gradient rule's
    ),
    Remedy(
        "torchscript",
        lambda node, group, cuda: str(node.get("type")).endswith(TORCHSCRIPT),
        "it runs as TorchScript, its parts unseen: compile the eager model instead",
        "A TorchScript module (torch.jit.script or torch.jit.load) runs its sub-modules inside "
        "TorchScript, where no module hook or line timer sees them, so the tree cannot split "
        "its time. TorchScript is deprecated (torch.jit.script warns so): run the eager model (its "
        "Python class) under torch.compile instead, and profile the eager model to see which "
        "of its parts takes the time.",
        ("torch.compile", "torch.export"),
        "compile",
        confidence="low",
        cause="torch.compile",
        code="model = torch.jit.script(model)   # before\nmodel = torch.compile(model)      # after",
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
        # (an nn.Sequential's own time is its loop over its parts and their hooks' cost:
        # nothing inside it to name with regions)
        lambda node, group, cuda: self_share(node) < SPREAD_SELF or node.get("type") in CONTAINERS,
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

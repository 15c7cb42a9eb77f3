"""What a hot line's fix says when the line is one kind of work and no cure rewrites it (one op,
one multi-tensor op, gradient clipping, a fused attention kernel, a matrix multiply, a sparse
one): the texts ``hot_lines._fix`` picks from, one home for each.

Example:
    >>> "foreach=True" in GRAD_CLIP_FIX
    True
"""

from __future__ import annotations

from torchdoctor.analyze.advice.hot_lines_cures import SPARSE_LAYOUT_CURE

#: the fix of a line that is one torch op (nothing on it to hoist or batch)
SINGLE_OP_FIX = (
    "The line is one {op} call: its time is the op's own, on these shapes. Nothing on the line "
    "to hoist or batch; make the op cheaper ({how}) or accept it."
)
#: ops of a conv net, whose memory layout (channels_last) changes their kernels
CONV_NET_OPS = ("conv", "pool", "batch_norm", "interpolate", "upsample", "pad")
CONV_NET_HOW = (
    "channels_last memory format or bf16 for a conv net's ops, torch.compile to fuse it with "
    "the elementwise ops around it"
)
OP_HOW = (
    "bf16 under torch.autocast on a GPU, a smaller input, torch.compile to fuse it with the "
    "elementwise ops around it"
)


#: the fix of a line that is one multi-tensor op (an EMA's torch._foreach_lerp_ over every
#: parameter: timm's ModelEmaV3): already the batched form, its time is one pass over memory
FOREACH_OP_FIX = (
    "The line is one multi-tensor {op} call over a list of tensors (every parameter, for an "
    "EMA or a hand-written update): already the batched form, its time is reading and writing "
    "those tensors once. Do it less often: an EMA updated every N steps with the decay raised "
    "to the N-th power (lerp weight 1 - decay**N) tracks nearly the same average at 1/N of "
    "the cost; or keep fewer tensors in it (the trainable ones; buffers copied, not averaged)."
)


#: the fix of a line that clips the gradients (no forward op: autocast or compile do not apply)
GRAD_CLIP_FIX = (
    "The line is one {op} call: a norm over every gradient, then a rescale of each, once per "
    "step. torch runs both as multi-tensor (foreach) kernels on CUDA by default; elsewhere pass "
    "foreach=True (a few launches for the whole list instead of several per parameter). Its "
    "time is one read of every gradient: with many small parameters, fewer and larger tensors "
    "(or a fused optimizer step after it) cost less; clipping itself is part of the training "
    "recipe, so keep it."
)

#: the fix of a line whose time is one fused attention kernel (no rewrite of the line helps)
FUSED_FIX = (
    "The line is already the fused kernel (scaled_dot_product_attention): its time is the "
    "kernel's. Make the kernel cheaper instead: bf16 under torch.autocast (CUDA), a shorter "
    "sequence or fewer heads, or torch.compile to fuse the ops around it."
)

#: ... on a CPU run where the CPU computes bfloat16 in hardware
CPU_BF16_ATTENTION = (
    "(CUDA; on this CPU too, which computes bfloat16 in hardware: "
    "torch.autocast('cpu', dtype=torch.bfloat16), measured on your step by torchdoctor tune)"
)


#: the fix of a line whose time is its matrix multiply (nothing in Python to rewrite)
MATMUL_FIX = (
    "The line's time is the matrix multiply itself ({op}), not Python: rewriting the line will "
    "not make it faster. Make the multiply cheaper: on a GPU run it in bf16 under "
    "torch.autocast (or TF32 for float32: torch.set_float32_matmul_precision('high')), keep "
    "its dimensions multiples of 64, and shrink the largest one if the model allows; "
    "`torchdoctor tune SCRIPT` measures autocast on your own step."
)


#: the fix of a line whose time is a matrix multiply with a sparse COO operand (figures:
#: ``torchdoctor.benchmarks.sparse_layouts``, BENCHMARKS.md)
SPARSE_COO_FIX = (
    "The line's time is a matrix multiply with a sparse COO operand ({op}). "
    + SPARSE_LAYOUT_CURE
)
#: ... with an operand already in a compressed layout (CSR, CSC, BSR)
SPARSE_FIX = (
    "The line's time is a matrix multiply with a sparse operand ({op}), already in a "
    "compressed layout. Above a few percent density a dense tensor is often faster (time both "
    "with torch.utils.benchmark); otherwise its cost is the nonzeros: fewer edges or "
    "features per row, or several right-hand sides multiplied in one product."
)

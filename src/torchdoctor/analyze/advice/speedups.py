"""The stated speedups of remedies: each an expected range on the part of the step it applies
to, with where it comes from (measured here, BENCHMARKS.md, or a cited source); Amdahl's law
over a measured share turns one into a saving (``base.amdahl_saving``).

Example:
    >>> SPEEDUPS["channels_last_cpu_depthwise"].high
    2.5
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Speedup:
    """An expected speedup range of a remedy on the part it applies to, with where it comes from.

    Example:
        >>> Speedup(1.2, 1.5, "torch.compile docs").low
        1.2
    """

    low: float
    high: float
    source: str
    #: for a remedy whose saving is stated only as a bound ("up to", :func:`compile_on_cpu`):
    #: the mean share of that bound real runs measured, by which its advice is ranked (None:
    #: too few runs, or a share that swings with what the model is; ranked by a tenth)
    realized: float | None = None


#: remedy -> expected speedup of the affected part. Savings use ``low`` (conservative); the
#: range is shown to the reader. Sources are cited in docs/advice-rules.md.
SPEEDUPS: dict[str, Speedup] = {
    "sdpa": Speedup(1.3, 2.0, "fused scaled_dot_product_attention vs unfused attention"),
    "bf16_autocast": Speedup(1.3, 2.0, "bf16/fp16 tensor cores on matmul-bound CUDA work"),
    "tf32": Speedup(1.2, 2.0, "TF32 tensor cores for fp32 matmul/conv on Ampere or newer"),
    "channels_last": Speedup(1.05, 1.3, "channels_last convolutions (cuDNN / oneDNN)"),
    "rnn_sequence": Speedup(
        2.41, 4.11, "BENCHMARKS.md suite 'fused' (CPU): a LSTMCell loop vs nn.LSTM, 2.41x "
        "(batch 97, 1000 steps) to 4.11x (batch 16, 100 steps)"
    ),
    "cell_by_hand": Speedup(
        1.46, 1.55, "BENCHMARKS.md suite 'fused' (CPU): a hand-written GRU cell's loop vs "
        "nn.GRU, 1.46x (batch 32, 16 steps) to 1.55x (batch 64, 100 steps)"
    ),
    "fused_optimizer": Speedup(
        4.45, 6.69, "BENCHMARKS.md suite 'fused' (CPU): an AdamW step with foreach=True vs "
        "fused=True, 4.45x (40 x 256x256 parameters) to 6.69x (GPT-2 small's shapes)"
    ),
    "fused_adam": Speedup(
        3.35, 4.93, "BENCHMARKS.md suite 'fused' (CPU): an Adam step with foreach=True vs "
        "fused=True, 3.35x (40 x 256x256 parameters) to 4.93x (GPT-2 small's shapes)"
    ),
    "fused_adam_small": Speedup(
        2.23, 2.37, "BENCHMARKS.md suite 'fused' (CPU): an Adam / AdamW step on a "
        "reinforcement-learning agent's two 4-256-256-1 critics (134,658 parameters in 12 "
        "tensors) with foreach=True vs fused=True, 2.23x (AdamW) to 2.37x (Adam)"
    ),
    "fused_sgd_momentum": Speedup(
        1.84, 5.12, "BENCHMARKS.md suite 'fused' (CPU): an SGD step with momentum, "
        "foreach=True vs fused=True, 1.84x (40 x 256x256 parameters) to 5.12x (GPT-2 small's "
        "shapes)"
    ),
    "fused_adagrad": Speedup(
        2.90, 6.27, "BENCHMARKS.md suite 'fused' (CPU): an Adagrad step with foreach=True vs "
        "fused=True, 2.90x (40 x 256x256 parameters) to 6.27x (GPT-2 small's shapes)"
    ),
    "centre_tap": Speedup(
        4.46, 16.3, "BENCHMARKS.md suite 'fused' (CPU): a 3x3 convolution with padding 1 on 1x1 "
        "maps vs the 1x1 convolution of its centre weights (the same function), forward + "
        "backward, 4.46x (16 x 256 channels) to 16.3x (64 x 512: ResNet's last stage)"
    ),
    "emulated_bf16": Speedup(
        9.2, 38.8, "BENCHMARKS.md (CPU with AVX2, no AVX512-BF16/AMX): forward + backward "
        "under CPU autocast to bfloat16 vs float32, 9.2x for a Lightning CNN's step and 13.3x "
        "for a Hugging Face BERT's, 15.7x-38.8x for suite 'fused''s MLP pair"
    ),
    "distribution_validation": Speedup(
        1.17, 1.28, "BENCHMARKS.md suite 'fused' (CPU): a Categorical / Normal built, scored "
        "(log_prob, entropy) and backpropagated with validate_args=True vs False, 1.17x "
        "(Normal, 4 x 2) to 1.28x (Categorical, 4 x 2)"
    ),
    "distribution_validation_forward": Speedup(
        1.55, 2.49, "BENCHMARKS.md suite 'fused' (CPU): a Categorical / Normal built and scored "
        "(log_prob) with validate_args=True vs False, forward only (a rollout's per-action "
        "distribution), 1.55x (Normal, 1 x 2) to 2.49x (Categorical(probs), 2 actions)"
    ),
    "attention_dropout_cpu": Speedup(
        1.86, 3.84, "BENCHMARKS.md suite 'fused' (CPU): scaled_dot_product_attention with "
        "dropout_p=0.1 vs 0, forward + backward, 1.86x (8 x 12 heads x 128 tokens x 64, one "
        "thread) to 3.84x (8 x 4 x 128 x 32, two threads)"
    ),
    "compile": Speedup(1.1, 1.5, "torch.compile fusion of elementwise chains and overheads"),
    # (on a CPU the low end is no gain: a saving is stated only as "up to", see compile_on_cpu)
    "compile_cpu": Speedup(
        1.0, 1.32, "torchdoctor tune on ten CPU training steps (BENCHMARKS.md): torch.compile "
        "measured 0.55x to 1.32x, median 1.0x, half of them slower (a ViT fine-tune: 1.03x)"
    ),
    # (its convolutions: Inductor's CPU code gains on them too, whatever the rest gives)
    "compile_cpu_conv": Speedup(
        1.0, 1.5, "a CIFAR ResNet-20's training step on a CPU, batch 128, compiled: 465 -> 316 ms "
        "(1.47x, interleaved, BENCHMARKS.md), more than 1.32x on its other ops can give; "
        "akamaster's resnet20 (clients round 16) saved 155 ms where 31.6 ms was the bound"
    ),
    # (on a CPU the memory format's gain depends on the net's other ops: stated as "up to")
    # (TD507's cure by the attention's form: the causal pair is hot_lines_cures.FUSED_ATTENTION's)
    "sdpa_unmasked": Speedup(
        1.15, 1.26, "BENCHMARKS.md suite 'fused' attention_layouts (CPU, forward + backward, "
        "interleaved): attention without a mask by hand vs SDPA, 1.15x (32x2x256x64) to 1.26x "
        "(8x12x256x64)"
    ),
    # (the dominant-module attention remedy on a CPU, the mask unknown: the two forms' span)
    "sdpa_cpu": Speedup(
        1.15, 1.97, "BENCHMARKS.md suite 'fused' attention_layouts (CPU, forward + backward, "
        "interleaved): attention by hand vs SDPA, 1.15x unmasked (32x2x256x64) to 1.97x causal "
        "(4x4x64x16); a ViT at 65 tokens measured 1.0-1.16x (clients round 20)"
    ),
    "sdpa_channels_first": Speedup(
        0.83, 1.28, "BENCHMARKS.md suite 'fused' attention_layouts (CPU, forward + backward, "
        "interleaved): a U-Net's channels-first attention (batch x heads, channels, tokens) by "
        "hand vs SDPA with the transposes its layout needs, 0.83x at 256 tokens (torchcfm's "
        "U-Net: its step 0.99x) to 1.28x at 1,024"
    ),
    "channels_last_cpu": Speedup(
        1.0, 1.3, "channels_last on CPU training steps of real clients (BENCHMARKS.md): 0.85x "
        "(a diffusion U-Net of GroupNorm, einsum attention and concatenated skips), 1.0x "
        "(pytorch/examples mnist), 1.16x (fast_neural_style), and a CNN whose max pooling was "
        "a quarter of its step gained a third of it"
    ),
    # (depthwise convolutions, one group per channel: NCHW takes a slow CPU path for them)
    "channels_last_cpu_depthwise": Speedup(
        1.9, 2.5, "a depthwise convolution's forward + backward in channels_last on a CPU, "
        "batch 16, three quiet runs (BENCHMARKS.md, suite 'fused' conv_layouts): 1.91x (3x3 at "
        "28x28) to 2.47x (3x3 stride 2 at 56x56); torchvision's mobilenet_v3_small training "
        "step 1.76x"
    ),
    # (grouped convolutions of several channels a group: ResNeXt's)
    "channels_last_cpu_grouped": Speedup(
        1.18, 2.0, "a grouped convolution's forward + backward in channels_last on a CPU, batch "
        "16, three quiet runs (BENCHMARKS.md, suite 'fused' conv_layouts): 32 groups of 4 "
        "channels at 28x28 1.95x-2.02x, of 8 channels at 14x14 1.18x-1.20x"
    ),
    # (pointwise, 1x1, convolutions: a matrix multiply over channels, strided in NCHW)
    "channels_last_cpu_pointwise": Speedup(
        1.24, 2.0, "a 1x1 convolution's forward + backward in channels_last on a CPU, batch 16, "
        "three quiet runs (BENCHMARKS.md, suite 'fused' conv_layouts): 1.24x (96 -> 576 at "
        "7x7) to 1.97x (256 -> 64 at 56x56)"
    ),
    # (a CPU with bf16 units, AVX512-BF16 / AMX: its matmuls and convolutions, measured)
    "bf16_autocast_cpu": Speedup(
        1.0, 1.45, "bf16 autocast on an AMX CPU (BENCHMARKS.md): a ResNet-style conv net's "
        "step 1.30x-1.40x, timm resnet18 with --amp-dtype bfloat16 1.28x-1.33x; small or "
        "elementwise-bound steps gain nothing (the casts cost what the kernels save)",
        # measured saving / stated bound over 16 client runs (rounds 7-14, interleaved A/Bs of
        # the clients' own steps, capped at 1): 0 (SimCLR, a siamese network, pytorch-
        # forecasting's N-BEATS, a LightningCLI classifier), 0.02 (MAE), 0.16 (timm
        # benchmark), 0.34 (HF run_clm), 0.44 (x-transformers), 0.53 (minGPT chargpt), 0.59
        # (DDPM), 0.67 (GAT), 0.78 (torchvision classification), 0.93 (DINO), 0.98 (timm
        # validate), 1 (super_resolution, a Hugging Face pipeline): mean 0.47, median 0.49
        realized=0.45,
    ),
    # (its convolutions: oneDNN's bfloat16 kernels; the ResNet steps above are its low end)
    "bf16_autocast_cpu_conv": Speedup(
        1.0, 2.5, "bf16 autocast on an AMX CPU, convolutions (interleaved A/B, clients round "
        "13): pytorch/examples super_resolution's training step 471 -> 188 ms (2.5x), its "
        "forward 2.22x; timm resnet18's forward at 224 px 1,364 -> 784 ms (1.74x), at 64 px "
        "1.24x; one dense convolution's forward + backward 2.05x-3.76x (BENCHMARKS.md, suite "
        "'fused' bf16_convs; depthwise ones 0.93x, 1x1 ones 1.05x-1.36x: counted with the rest)"
    ),
    # (its matrix multiplies: linear layers and a hand-written attention's products)
    "bf16_autocast_cpu_matmul": Speedup(
        1.0, 3.5, "bf16 autocast on an AMX CPU: a linear layer's forward + backward at ViT-tiny's "
        "shapes (3,152 x 192 -> 768) 3.31x; facebookresearch/dino's vit_tiny training step "
        "2,329 -> 1,181 ms (1.97x, interleaved A/B); mnist_forward_forward's 10,000 x 784 x 500 "
        "multiply 74 -> 25 ms (2.96x)"
    ),
    "compile_repeated": Speedup(1.2, 1.5, "torch.compile on a stack of identical layers"),
    "halve_layers": Speedup(2.0, 2.0, "half the layers of a stack take half the time"),
    "ops_replacement": Speedup(2.0, 10.0, "torchdoctor.ops batched sync-free building blocks"),
    "dataloader_workers": Speedup(2.0, 10.0, "DataLoader workers overlap loading with compute"),
    "float32": Speedup(
        1.44, 2.23, "float64 vs float32 on this CPU (2 cores, torch 2.13): a loop of two "
        "LSTMCells over 200 steps, forward + backward, 1.44x; a 256-512-256 MLP, 2.23x"
    ),
    "on_device": Speedup(2.0, 10.0, "on-device op instead of a CPU round trip"),
    # (on the kernel time of a CPU step: its share of it that a caching allocator saves)
    "caching_allocator": Speedup(
        2.0, 200.0, "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 on real CPU "
        "clients saved 83-99.5% of their kernel time per step (build-nanogpt 797 -> 415 ms, llm.c's "
        "train_gpt2.py 2245 -> 1740 ms; PointNet++'s kernel time 1,710 -> 8 ms a step); 2x at "
        "the low end: kernel time of other causes stays"
    ),
    # (a per-parameter update loop's cure by its kind: lint TD305 tells an EMA's _foreach_lerp_)
    "foreach_ema": Speedup(
        1.31, 5.47, "BENCHMARKS.md suite 'fused': an EMA's per-parameter mul_().add_() loop vs "
        "torch._foreach_lerp_ on 100 parameters (CPU), 1.31x (512x512 weights) to 5.47x "
        "(64x64); facebookresearch/dino's teacher EMA (vit_tiny) 27.3 -> 10.1 ms, 2.7x",
    ),
    "foreach_sgd": Speedup(
        1.08, 2.32, "BENCHMARKS.md suite 'fused': a per-parameter p.add_(g) loop vs "
        "torch._foreach_add_ on 100 parameters (CPU), 1.08x (512x512 weights) to 2.32x (64x64)",
    ),
}

"""Hand-written activations and attention against torch's fused kernels (lint TD507, TD508).

Forward and backward of each pair on the same input, interleaved, outputs and input gradients
compared: minGPT's tanh GELU (``NewGELU``) against ``F.gelu(x, approximate="tanh")``, the erf
GELU against ``F.gelu(x)``, ``x * torch.sigmoid(x)`` against ``F.silu(x)``, ``log1p(exp(x))`` against
``F.softplus(x)``, and minGPT's causal
attention (``softmax(masked(q @ k^T / sqrt(d))) @ v``) against
``F.scaled_dot_product_attention(..., is_causal=True)``, and a Python loop of ``LSTMCell`` over
time against ``nn.LSTM`` over the sequence (pytorch/examples time_sequence_prediction), a
hand-written GRU cell's loop against ``nn.GRU`` (karpathy/makemore's ``GRUCell``),
``F.binary_cross_entropy(torch.sigmoid(x), y)`` against ``F.binary_cross_entropy_with_logits(x,
y)`` (TD510; pytorch/examples VAE's loss), a 3x3 convolution with padding 1 on 1x1 feature maps
against the 1x1 convolution of its centre weights, the same function (torchvision's ResNet on
28x28 images: its last stage; the dominant-module remedy ``padded-convolutions``); and an
AdamW step with ``foreach=True`` against ``fused=True``. The speedups are what the advice on a
hot line with such a finding quotes (``analyze/advice/hot_lines_cures.py``): the smallest case
is the low end, the largest the high end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from torchdoctor.measure import BenchTable, compare


def gelu_tanh_by_hand(x: torch.Tensor) -> torch.Tensor:
    """minGPT's ``NewGELU``, written out (TD508's slow form).

    Example:
        >>> x = torch.linspace(-3, 3, 7)
        >>> torch.allclose(gelu_tanh_by_hand(x), gelu_tanh_fused(x), atol=1e-6)
        True
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_tanh_fused(x: torch.Tensor) -> torch.Tensor:
    """torch's fused tanh GELU (TD508's cure).

    Example:
        >>> gelu_tanh_fused(torch.zeros(2)).tolist()
        [0.0, 0.0]
    """
    return F.gelu(x, approximate="tanh")


def gelu_erf_by_hand(x: torch.Tensor) -> torch.Tensor:
    """The erf GELU written out (TD508's slow form).

    Example:
        >>> x = torch.linspace(-3, 3, 7)
        >>> torch.allclose(gelu_erf_by_hand(x), F.gelu(x), atol=1e-6)
        True
    """
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def silu_by_hand(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)`` (TD508's slow form of ``F.silu``).

    Example:
        >>> x = torch.linspace(-3, 3, 7)
        >>> torch.allclose(silu_by_hand(x), F.silu(x))
        True
    """
    return x * torch.sigmoid(x)


def softplus_by_hand(x: torch.Tensor) -> torch.Tensor:
    """``log1p(exp(x))`` (TD508's softplus; pytorch/examples mnist_forward_forward's loss).

    Example:
        >>> x = torch.linspace(-3, 3, 7)
        >>> torch.allclose(softplus_by_hand(x), F.softplus(x))
        True
    """
    return torch.log1p(torch.exp(x))


def attention_by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    t = q.shape[-2]
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
    return att @ v


def attention_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


_targets: dict[tuple[int, ...], torch.Tensor] = {}


def _target(x: torch.Tensor) -> torch.Tensor:
    """A fixed target in [0, 1] of ``x``'s shape (the same for both sides of a pair)."""
    key = tuple(x.shape)
    if key not in _targets:
        _targets[key] = torch.rand(key, generator=torch.Generator().manual_seed(0))
    return _targets[key]


def bce_of_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a sigmoid's output (TD510's slow form).

    Example:
        >>> x = torch.randn(4, 8)
        >>> torch.allclose(bce_of_sigmoid(x), bce_with_logits(x), atol=1e-6)
        True
    """
    return F.binary_cross_entropy(torch.sigmoid(x), _target(x))


def bce_with_logits(x: torch.Tensor) -> torch.Tensor:
    """The fused form of :func:`bce_of_sigmoid` (TD510's cure).

    Example:
        >>> round(bce_with_logits(torch.zeros(3, 3)).item(), 4)  # log 2 for any target
        0.6931
    """
    return F.binary_cross_entropy_with_logits(x, _target(x))


_conv_weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _conv_weight(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed 3x3 weight of ``channels`` in and out, and its centre tap: each a leaf that
    requires grad, as a layer's weight does (its gradient is most of the backward's work)."""
    if channels not in _conv_weights:
        weight = torch.randn(channels, channels, 3, 3, generator=torch.Generator().manual_seed(0))
        weight = weight / (3 * channels**0.5)
        centre = weight[:, :, 1:2, 1:2].contiguous()
        _conv_weights[channels] = (weight.requires_grad_(), centre.requires_grad_())
    return _conv_weights[channels]


def conv3x3_on_padding(x: torch.Tensor) -> torch.Tensor:
    """A 3x3 convolution with padding 1 (on 1x1 maps: mostly padding).

    Example:
        >>> x = torch.randn(2, 8, 1, 1)
        >>> torch.allclose(conv3x3_on_padding(x), conv_centre_tap(x), atol=1e-6)
        True
    """
    return F.conv2d(x, _conv_weight(x.shape[1])[0], padding=1)


def conv_centre_tap(x: torch.Tensor) -> torch.Tensor:
    """The 1x1 convolution of :func:`conv3x3_on_padding`'s centre weights.

    Example:
        >>> conv_centre_tap(torch.zeros(2, 8, 1, 1)).shape
        torch.Size([2, 8, 1, 1])
    """
    return F.conv2d(x, _conv_weight(x.shape[1])[1])


_W1 = torch.randn(128, 512, generator=torch.Generator().manual_seed(0)) / 128**0.5
_W2 = torch.randn(512, 128, generator=torch.Generator().manual_seed(1)) / 512**0.5


def mlp_cpu_bf16(x: torch.Tensor) -> torch.Tensor:
    """A two-layer MLP under CPU autocast to bfloat16 (HF ``bf16=True``, Lightning's
    ``precision="bf16-mixed"`` on a CPU): emulated on a CPU without bf16 instructions.

    Example:
        >>> x = torch.randn(4, 128)
        >>> torch.allclose(mlp_cpu_bf16(x), mlp_fp32(x), atol=0.05)
        True
    """
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return (F.gelu(x @ _W1) @ _W2).float()


def mlp_fp32(x: torch.Tensor) -> torch.Tensor:
    """The same MLP in float32.

    Example:
        >>> mlp_fp32(torch.zeros(2, 128)).shape
        torch.Size([2, 128])
    """
    return F.gelu(x @ _W1) @ _W2


def _cell_and_lstm(hidden: int) -> tuple[torch.nn.LSTMCell, torch.nn.LSTM]:
    cell, lstm = torch.nn.LSTMCell(1, hidden), torch.nn.LSTM(1, hidden, batch_first=True)
    with torch.no_grad():  # the same weights: the same function
        for ours, theirs in (("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0"),
                             ("bias_ih", "bias_ih_l0"), ("bias_hh", "bias_hh_l0")):  # fmt: skip
            getattr(lstm, theirs).copy_(getattr(cell, ours))
    return cell, lstm


def rnn_pair(hidden: int):
    """(a Python loop of LSTMCell over time, nn.LSTM over the sequence), same weights: the
    dominant-module remedy for an RNN cell called once per time step (time_sequence_prediction)."""
    cell, lstm = _cell_and_lstm(hidden)

    def cell_loop(x: torch.Tensor) -> torch.Tensor:
        h = c = x.new_zeros(x.shape[0], hidden)
        outputs = []
        for step in x.split(1, dim=1):
            h, c = cell(step.squeeze(1), (h, c))
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def sequence(x: torch.Tensor) -> torch.Tensor:
        return lstm(x)[0]

    return cell_loop, sequence


def gru_pair(hidden: int):
    """(a hand-written GRU cell, two Linear maps and its gates, called over time in a Python
    loop; nn.GRU over the sequence), nn.GRU's equations and weights: the same function. The
    dominant-module remedy for a recurrent cell of the user's own called once per time step
    (karpathy/makemore's ``GRUCell``)."""
    gru = torch.nn.GRU(hidden, hidden, batch_first=True)
    w_ih, w_hh, b_ih, b_hh = gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0

    def cell_loop(x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], hidden)
        outputs = []
        for t in range(x.shape[1]):
            i_r, i_z, i_n = F.linear(x[:, t], w_ih, b_ih).chunk(3, dim=1)
            h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            h = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def sequence(x: torch.Tensor) -> torch.Tensor:
        return gru(x)[0]

    return cell_loop, sequence


def distribution_pair(kind: str):
    """(a torch.distributions ``kind`` ("categorical" or "normal") built from the input,
    scored with log_prob and entropy, with argument validation; the same without): the
    torch-syncs remedy for a policy's distributions (validation is on by default outside
    ``python -O``; each check is a host read, and costs CPU time on any device)."""
    from torch.distributions import Categorical, Normal

    def make(validate: bool):
        def scored(x: torch.Tensor) -> torch.Tensor:
            if kind == "categorical":
                d = Categorical(logits=x, validate_args=validate)
                return d.log_prob(x.detach().argmax(-1)) + d.entropy()
            d = Normal(x, x.exp(), validate_args=validate)
            return (d.log_prob(x.detach()) + d.entropy()).sum(-1)

        return scored

    return make(True), make(False)


def topk_pair(k: int):
    """(the k largest of the last dimension by a full descending sort then a slice, the same
    by torch.topk): the TD512 remedy; both return the values in order."""

    def by_sort(x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=-1, descending=True).values[..., :k]

    def by_topk(x: torch.Tensor) -> torch.Tensor:
        return torch.topk(x, k, dim=-1).values

    return by_sort, by_topk


def optimizer_pair(shapes: list[tuple[int, ...]], kind: str = "AdamW", **options: float):
    """(``torch.optim.<kind>`` with foreach=True, with fused=True; ``options``: its settings),
    each on its own copy of the same parameters and gradients: one optimizer step per call, the
    first parameter returned (the optimizer-step rule's remedy; nanoGPT's configure_optimizers
    asks for fused on CUDA only)."""
    settings = {"lr": 1e-3, **options}

    def make(**setting: bool):
        torch.manual_seed(0)
        params = [torch.randn(*shape, requires_grad=True) for shape in shapes]
        for param in params:
            param.grad = torch.randn_like(param)
        optimizer = getattr(torch.optim, kind)(params, **settings, **setting)

        def step(_: torch.Tensor) -> torch.Tensor:
            optimizer.step()
            return params[0]

        return step

    return make(foreach=True), make(fused=True)


def slice_scan(x: torch.Tensor) -> torch.Tensor:
    """A linear scan over time that slices its input per step (mamba.py's sequential scan):
    each ``x[:, t]``'s backward writes a zero gradient the size of all of x (TD307)."""
    h, states = torch.zeros_like(x[:, 0]), []
    for t in range(x.shape[1]):
        h = 0.9 * h + x[:, t]
        states.append(h)
    return torch.stack(states, dim=1)


def unbind_scan(x: torch.Tensor) -> torch.Tensor:
    """The same scan over ``x.unbind(1)``: the slices taken once, one stack in backward."""
    h, states = torch.zeros_like(x[:, 0]), []
    for x_t in x.unbind(1):
        h = 0.9 * h + x_t
        states.append(h)
    return torch.stack(states, dim=1)


def elementwise_chain(delta: torch.Tensor, A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """mamba.py's selective-scan prologue: a broadcast multiply, an exponential and two more
    multiplies over (B, L, ED, N), one pass over memory each in eager mode."""
    deltaA = torch.exp(delta.unsqueeze(-1) * A)
    BX = delta.unsqueeze(-1) * x.unsqueeze(-1) * x.unsqueeze(-1)
    return deltaA * BX


#: (B, L, ED, N) of the chain: small, and mamba.py's d_model=64 layer at 128 tokens
CHAIN_SHAPES = ((4, 32, 32, 8), (8, 128, 128, 16))


def chain_table(repeats: int) -> BenchTable:
    """The elementwise chain eager vs torch.compile (forward + backward; compiled once per
    shape before timing). Not in quick runs: compiling takes seconds and a C++ compiler."""
    table = BenchTable(
        "elementwise chain: eager vs torch.compile (forward + backward, interleaved, median of "
        "per-pair ratios)",
        ["case", "eager ms", "compiled ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    for b, length, width, state in CHAIN_SHAPES:
        compiled = torch.compile(elementwise_chain, dynamic=False)
        delta = torch.rand(b, length, width, requires_grad=True)
        A = torch.randn(width, state, requires_grad=True)
        x = torch.randn(b, length, width, requires_grad=True)
        compiled(delta, A, x).sum().backward()  # (the compile, untimed)
        result = compare(elementwise_chain, compiled, delta, A, x, repeats=repeats, grads=True,
                         rtol=1e-4, atol=1e-4, names=("eager", "compiled"))  # fmt: skip
        table.add_row(f"exp(d * A) * d * x * x {(b, length, width, state)}", *result.row())
    table.notes.append(
        "the chain in hot lines of elementwise ops (analyze/advice/chain_cure.py); "
        f"{torch.get_num_threads()} intra-op thread(s), CPU, torch {torch.__version__}"
    )
    return table


_SMALL, _GPT2 = [(256, 256)] * 40, [(768, 768)] * 48 + [(50304, 768)]
#: two critics of a reinforcement-learning agent (stable-baselines3's SAC on a 3-dimensional
#: observation, 1-dimensional action: 4-256-256-1 each, 134,658 parameters in 12 tensors)
_AGENT = [(256, 4), (256,), (256, 256), (256,), (1, 256), (1,)] * 2
#: (case, parameter shapes, optimizer class, its settings): a small model and GPT-2 small's
#: shapes (12 blocks, 50304 x 768 embedding) per class the optimizer-step rule advises on;
#: SGD with momentum (the ImageNet recipe's) and without (a momentum buffer is most of the work);
#: Adam on an RL agent's tiny networks, where the fused kernel gains less
OPTIMIZER_CASES = (
    ("Adam, an RL agent's critics (2 x 4-256-256-1)", _AGENT, "Adam", {}),
    ("AdamW, an RL agent's critics (2 x 4-256-256-1)", _AGENT, "AdamW", {}),
    ("AdamW, 40 x (256, 256)", _SMALL, "AdamW", {}),
    ("AdamW, GPT-2 small shapes", _GPT2, "AdamW", {}),
    ("Adam, 40 x (256, 256)", _SMALL, "Adam", {}),
    ("Adam, GPT-2 small shapes", _GPT2, "Adam", {}),
    ("SGD momentum 0.9, 40 x (256, 256)", _SMALL, "SGD", {"momentum": 0.9, "weight_decay": 1e-4}),
    ("SGD momentum 0.9, GPT-2 small shapes", _GPT2, "SGD", {"momentum": 0.9, "weight_decay": 1e-4}),
    ("SGD without momentum, 40 x (256, 256)", _SMALL, "SGD", {}),
    ("SGD without momentum, GPT-2 small shapes", _GPT2, "SGD", {}),
    ("Adagrad, 40 x (256, 256)", _SMALL, "Adagrad", {}),
    ("Adagrad, GPT-2 small shapes", _GPT2, "Adagrad", {}),
)


#: (case, by hand, fused, the input shapes (small, large), tolerance)
CASES = (
    ("tanh GELU (TD508)", gelu_tanh_by_hand, gelu_tanh_fused, ((4, 64, 192), (8, 256, 3072)), 1e-5),
    ("erf GELU (TD508)", gelu_erf_by_hand, F.gelu, ((4, 64, 192), (8, 256, 3072)), 1e-5),
    ("SiLU (TD508)", silu_by_hand, F.silu, ((4, 64, 192), (8, 256, 3072)), 1e-5),
    ("softplus (TD508)", softplus_by_hand, F.softplus, ((4, 64, 192), (8, 256, 3072)), 1e-5),
    ("causal attention (TD507)", attention_by_hand, attention_fused,
     ((4, 4, 64, 16), (8, 12, 256, 64)), 1e-4),
    ("LSTMCell loop vs nn.LSTM (rnn-cell)", *rnn_pair(51), ((16, 100, 1), (97, 1000, 1)), 1e-4),
    ("hand-written GRU cell loop vs nn.GRU (cell-by-hand)", *gru_pair(64),
     ((32, 16, 64), (64, 100, 64)), 1e-4),
    ("sigmoid + BCE vs BCE with logits (TD510)", bce_of_sigmoid, bce_with_logits,
     ((128, 784), (64, 3, 64, 64)), 1e-5),
    ("3x3 conv on 1x1 maps vs its centre tap (padded-convolutions)", conv3x3_on_padding,
     conv_centre_tap, ((16, 256, 1, 1), (64, 512, 1, 1)), 1e-4),
    ("MLP under CPU autocast bf16 vs float32 (emulated-bf16)", mlp_cpu_bf16, mlp_fp32,
     ((256, 128), (4096, 128)), 0.1),
    ("Categorical with argument checks vs without (torch-syncs)",
     *distribution_pair("categorical"), ((4, 2), (256, 6)), 1e-6),
    ("Normal with argument checks vs without (torch-syncs)", *distribution_pair("normal"),
     ((4, 2), (256, 6)), 1e-6),
    ("sort then the first 16 vs topk (TD512)", *topk_pair(16), ((64, 1000), (8, 50257)), 1e-6),
    ("scan slicing x[:, t] per step vs over x.unbind(1) (TD307)", slice_scan, unbind_scan,
     ((4, 32, 64), (8, 128, 2048)), 1e-5),
)  # fmt: skip


def run(quick: bool = False) -> list[BenchTable]:
    """Each hand-written form against its fused kernel, forward and backward.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.columns[:3], len(table.rows)
        (['case', 'by hand ms', 'fused ms'], 14)
    """
    torch.manual_seed(0)
    repeats = 3 if quick else 15
    table = BenchTable(
        "fused kernels: hand-written activations and attention vs torch's (forward + backward, "
        "interleaved, median of per-pair ratios)",
        ["case", "by hand ms", "fused ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    for name, by_hand, fused, shapes, tolerance in CASES:
        for shape in shapes[:1] if quick else shapes:
            count = 3 if "attention" in name else 1
            inputs = [torch.randn(*shape, requires_grad=True) for _ in range(count)]
            result = compare(by_hand, fused, *inputs, repeats=repeats, grads=True,
                             rtol=tolerance, atol=tolerance, names=("by hand", "fused"))  # fmt: skip
            table.add_row(f"{name} {tuple(shape)}", *result.row())
    table.notes.append(
        "speedup = hand-written time / fused time, per interleaved pair; each timed call is the "
        "forward and the backward of the summed output; outputs and input gradients compared"
    )
    table.notes.append(f"{torch.get_num_threads()} intra-op thread(s), CPU")
    optimizers = BenchTable(
        "fused optimizers: foreach=True vs fused=True, one step (interleaved, median of "
        "per-pair ratios)",
        ["case", "foreach ms", "fused ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    for name, shapes, kind, options in OPTIMIZER_CASES[:1] if quick else OPTIMIZER_CASES:
        foreach, fused = optimizer_pair(shapes, kind, **options)
        result = compare(foreach, fused, torch.zeros(1), repeats=repeats, rtol=1e-4, atol=1e-6,
                         names=("foreach", "fused"))  # fmt: skip
        optimizers.add_row(name, *result.row())
    optimizers.notes.append(
        "each side steps its own copy of the same parameters and gradients; the first parameter "
        f"compared after each step; {torch.get_num_threads()} intra-op thread(s), CPU"
    )
    return [table, optimizers] if quick else [table, optimizers, chain_table(repeats)]

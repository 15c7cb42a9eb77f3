"""One convolution's forward + backward in NCHW against channels_last, on the CPU, by kind.

The channels_last advice states only a bound on a CPU ("up to"), and the bound depends on the
kind of convolution: a dense 3x3 convolution gains little; a depthwise one takes a slow NCHW
path and gains most (torchvision's mobilenet_v3_small training step: 1.76x in channels_last),
a grouped one (ResNeXt's) up to as much; a 1x1 convolution is a matrix multiply over channels
that NCHW strides. These figures are the basis of ``SPEEDUPS["channels_last_cpu_depthwise"]``,
``["channels_last_cpu_grouped"]`` and ``["channels_last_cpu_pointwise"]``
(``analyze/advice/speedups.py``). Each side holds its
own copy of the layer and of its input in its own memory format (in a channels_last net the
activations stay in it: no conversion is timed); the outputs are compared.
"""

from __future__ import annotations

import copy

import torch

from torchdoctor.measure import BenchTable, compare

#: (case, in channels, out channels, kernel, groups, stride, map size); batch BATCH
CASES = (
    ("dense 3x3, 64 -> 64 at 56x56", 64, 64, 3, 1, 1, 56),
    ("dense 3x3, 128 -> 128 at 28x28", 128, 128, 3, 1, 1, 28),
    ("depthwise 3x3, 16 at 56x56", 16, 16, 3, 16, 1, 56),
    ("depthwise 3x3, 72 at 28x28", 72, 72, 3, 72, 1, 28),
    ("depthwise 5x5, 96 at 14x14", 96, 96, 5, 96, 1, 14),
    ("depthwise 3x3 stride 2, 72 at 56x56", 72, 72, 3, 72, 2, 56),
    ("grouped 3x3 (32 groups), 128 at 28x28", 128, 128, 3, 32, 1, 28),
    ("grouped 3x3 (32 groups), 256 at 14x14", 256, 256, 3, 32, 1, 14),
    ("1x1, 16 -> 72 at 56x56", 16, 72, 1, 1, 1, 56),
    ("1x1, 64 -> 256 at 56x56", 64, 256, 1, 1, 1, 56),
    ("1x1, 256 -> 64 at 56x56", 256, 64, 1, 1, 1, 56),
    ("1x1, 72 -> 24 at 28x28", 72, 24, 1, 1, 1, 28),
    ("1x1, 96 -> 576 at 7x7", 96, 576, 1, 1, 1, 7),
)
BATCH = 16


def layout_pair(cin: int, cout: int, kernel: int, groups: int, stride: int, size: int,
                batch: int = BATCH):  # fmt: skip
    """(the layer's forward + backward in NCHW, the same in channels_last): each a callable of
    no argument that runs its own layer on its own input, backward included, and returns the
    output and the input's gradient.

    Example:
        >>> nchw, nhwc = layout_pair(8, 8, 3, 8, 1, 6, batch=2)
        >>> (out, grad), (out_last, grad_last) = nchw(), nhwc()
        >>> torch.allclose(out, out_last, atol=1e-5), torch.allclose(grad, grad_last, atol=1e-5)
        (True, True)
        >>> out_last.is_contiguous(memory_format=torch.channels_last)
        True
    """
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups,
                           bias=False)  # fmt: skip
    x = torch.randn(batch, cin, size, size, requires_grad=True)
    last = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    x_last = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()

    def step(layer: torch.nn.Module, inputs: torch.Tensor):
        inputs.grad = None
        out = layer(inputs)
        out.sum().backward()
        return out.detach(), inputs.grad

    return (lambda: step(conv, x)), (lambda: step(last, x_last))


def run(quick: bool = False) -> list[BenchTable]:
    """NCHW against channels_last for each case, forward + backward.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.columns[:3], len(table.rows)
        (['case', 'NCHW ms', 'channels_last ms'], 3)
    """
    repeats = 3 if quick else 15
    table = BenchTable(
        "one convolution's forward + backward on the CPU: NCHW vs channels_last (interleaved, "
        "median of per-pair ratios)",
        ["case", "NCHW ms", "channels_last ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    cases = [c for c in CASES if c[-1] <= 28][:3] if quick else CASES
    for name, cin, cout, kernel, groups, stride, size in cases:
        nchw, nhwc = layout_pair(cin, cout, kernel, groups, stride, size,
                                 batch=2 if quick else BATCH)  # fmt: skip
        # (each side runs its own backward: compare's grads= needs inputs both sides share)
        result = compare(nchw, nhwc, repeats=repeats, rtol=1e-4, atol=1e-4,
                         names=("NCHW", "channels_last"))  # fmt: skip
        table.add_row(name, *result.row())
    table.notes.append(
        f"speedup = NCHW time / channels_last time, per interleaved pair; batch {BATCH}, "
        "forward + backward (the summed output's, to the input and the weights; outputs and "
        "input gradients compared); each side's layer and input are in its "
        f"own memory format, made once; {torch.get_num_threads()} intra-op thread(s), CPU, "
        f"torch {torch.__version__}"
    )
    return [table]


if __name__ == "__main__":  # python -m torchdoctor.benchmarks.<name> [--quick]
    import sys

    for result_table in run(quick="--quick" in sys.argv):
        print(result_table.to_markdown())

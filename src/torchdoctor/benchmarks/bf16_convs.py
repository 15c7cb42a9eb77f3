"""One convolution's forward + backward in float32 against CPU bf16 autocast, by kind.

The CPU bf16-autocast advice states only a bound ("up to"), and on a CPU that computes bfloat16
in hardware (AVX512-BF16 / AMX) convolutions gain more than the elementwise rest of a step:
clients round 13 measured pytorch/examples super_resolution's training step 2.5x and timm
resnet18's forward 1.74x under ``torch.autocast("cpu", dtype=torch.bfloat16)``. This suite
makes the per-layer figure reproducible; it backs ``SPEEDUPS["bf16_autocast_cpu_conv"]``
(``analyze/advice/speedups.py``). On a CPU without bf16 units autocast emulates it and is
slower (the ``emulated-bf16`` rule): the table's note says which this CPU is.
"""

from __future__ import annotations

import torch

from torchdoctor.measure import BenchTable, compare

#: (case, in channels, out channels, kernel, groups, map size); batch BATCH
CASES = (
    ("dense 3x3, 64 -> 64 at 56x56", 64, 64, 3, 1, 56),
    ("dense 3x3, 128 -> 128 at 28x28", 128, 128, 3, 1, 28),
    ("dense 5x5, 1 -> 64 at 64x64 (super_resolution's first)", 1, 64, 5, 1, 64),
    ("1x1, 64 -> 256 at 56x56", 64, 256, 1, 1, 56),
    ("1x1, 256 -> 64 at 56x56", 256, 64, 1, 1, 56),
    ("1x1, 96 -> 576 at 7x7", 96, 576, 1, 1, 7),
    ("depthwise 3x3, 72 at 28x28", 72, 72, 3, 72, 28),
)
BATCH = 16


def autocast_pair(cin: int, cout: int, kernel: int, groups: int, size: int, batch: int = BATCH):
    """(the layer's forward + backward in float32, the same under CPU bf16 autocast): each a
    callable of the input.

    Example:
        >>> fp32, bf16, x = autocast_pair(4, 8, 3, 1, 6, batch=2)
        >>> fp32(x).dtype, bf16(x).dtype
        (torch.float32, torch.bfloat16)
    """
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)
    x = torch.randn(batch, cin, size, size, requires_grad=True)

    def autocast(inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return conv(inputs)

    return conv, autocast, x


def run(quick: bool = False) -> list[BenchTable]:
    """float32 against bf16 autocast for each case, forward + backward.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.columns[:3], len(table.rows)
        (['case', 'float32 ms', 'bf16 autocast ms'], 2)
    """
    from torchdoctor.session import environment  # (whether the CPU has bf16 units)

    repeats = 3 if quick else 15
    table = BenchTable(
        "one convolution's forward + backward on the CPU: float32 vs bf16 autocast "
        "(interleaved, median of per-pair ratios)",
        ["case", "float32 ms", "bf16 autocast ms", "speedup", "spread (min-max)", "IQR",
         "verdict"],
    )  # fmt: skip
    for name, cin, cout, kernel, groups, size in CASES[:2] if quick else CASES:
        fp32, bf16, x = autocast_pair(cin, cout, kernel, groups, 8 if quick else size,
                                      batch=2 if quick else BATCH)  # fmt: skip
        # (bfloat16 keeps 8 bits of mantissa: outputs and input gradients agree to ~1e-2)
        result = compare(fp32, bf16, x, repeats=repeats, grads=True, rtol=5e-2, atol=5e-2,
                         names=("float32", "bf16 autocast"))  # fmt: skip
        table.add_row(name, *result.row())
    table.notes.append(
        f"speedup = float32 time / bf16 autocast time, per interleaved pair; batch {BATCH}, "
        "forward + backward (the summed output's, with respect to the input); outputs and "
        "gradients compared at rtol = atol = 5e-2 (bfloat16); this CPU computes bfloat16 in "
        f"hardware: {environment()['bf16_native']}; {torch.get_num_threads()} intra-op thread(s), torch "
        f"{torch.__version__}"
    )
    return [table]


if __name__ == "__main__":  # python -m torchdoctor.benchmarks.<name> [--quick]
    import sys

    for result_table in run(quick="--quick" in sys.argv):
        print(result_table.to_markdown())

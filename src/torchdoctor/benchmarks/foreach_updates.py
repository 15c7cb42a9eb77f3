"""A Python loop updating each parameter in place against the multi-tensor ``torch._foreach``
op (lint TD305, per-parameter-update-loop).

Two updates every training step makes, on a stack of ``nn.Linear`` layers (100 parameters:
weights and biases): a hand-written SGD step (``p.add_(p.grad, alpha=-lr)`` per parameter
against ``torch._foreach_add_(params, grads, alpha=-lr)``) and an EMA of the weights
(``pe.mul_(d).add_(p, alpha=1 - d)`` per parameter against ``torch._foreach_lerp_(ema_params,
params, 1 - d)``). Each side updates its own copy of the same tensors, the same number of
times; the first parameter is compared. The speedup is what TD305's message quotes.
"""

from __future__ import annotations

import torch

from torchdoctor.measure import BenchTable, compare

#: (case, number of Linear layers, width): 2 parameters per layer
CASES = (
    ("100 parameters, 50 x Linear(64, 64)", 50, 64),
    ("100 parameters, 50 x Linear(512, 512)", 50, 512),
)
LR, DECAY = 1e-3, 0.999


def _tensors(layers: int, width: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(parameters, gradients or a second model's parameters): the same values on every call."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))
    params = [p.detach().clone() for p in model.parameters()]
    others = [torch.randn_like(p) for p in params]
    return params, others


def sgd_pair(layers: int, width: int):
    """(the per-parameter SGD loop, torch._foreach_add_), each on its own copy.

    Example:
        >>> loop, foreach = sgd_pair(2, 4)
        >>> torch.allclose(loop(None), foreach(None))
        True
    """

    def make(multi_tensor: bool):
        params, grads = _tensors(layers, width)

        def step(_: object) -> torch.Tensor:
            if multi_tensor:
                torch._foreach_add_(params, grads, alpha=-LR)
            else:
                for p, g in zip(params, grads):  # noqa: TD305 (the measured slow side)
                    p.add_(g, alpha=-LR)
            return params[0]

        return step

    return make(False), make(True)


def ema_pair(layers: int, width: int):
    """(the per-parameter EMA loop, torch._foreach_lerp_), each on its own copy.

    Example:
        >>> loop, foreach = ema_pair(2, 4)
        >>> torch.allclose(loop(None), foreach(None))
        True
    """

    def make(multi_tensor: bool):
        ema, params = _tensors(layers, width)

        def step(_: object) -> torch.Tensor:
            if multi_tensor:
                torch._foreach_lerp_(ema, params, 1 - DECAY)
            else:
                for pe, p in zip(ema, params):  # noqa: TD305 (the measured slow side)
                    pe.mul_(DECAY).add_(p, alpha=1 - DECAY)
            return ema[0]

        return step

    return make(False), make(True)


def run(quick: bool = False) -> list[BenchTable]:
    """The per-parameter loop against the foreach op, for an SGD step and an EMA update.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.columns[:3], len(table.rows)
        (['case', 'loop ms', 'foreach ms'], 2)
    """
    repeats = 5 if quick else 31
    table = BenchTable(
        "per-parameter update loop vs torch._foreach (TD305), one update of every parameter "
        "(interleaved, median of per-pair ratios)",
        ["case", "loop ms", "foreach ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    for name, layers, width in CASES[:1] if quick else CASES:
        for update, pair in (("SGD p.add_(g)", sgd_pair), ("EMA mul_().add_()", ema_pair)):
            loop, foreach = pair(layers, width)
            result = compare(loop, foreach, None, repeats=repeats, rtol=1e-5, atol=1e-6,
                             names=("loop", "foreach"))  # fmt: skip
            table.add_row(f"{update}, {name}", *result.row())
    table.notes.append(
        "speedup = loop time / foreach time, per interleaved pair; each side updates its own "
        "copy of the same tensors the same number of times, the first parameter is compared; "
        f"{torch.get_num_threads()} intra-op thread(s), CPU, torch {torch.__version__}"
    )
    return [table]


if __name__ == "__main__":  # python -m torchdoctor.benchmarks.<name> [--quick]
    import sys

    for result_table in run(quick="--quick" in sys.argv):
        print(result_table.to_markdown())

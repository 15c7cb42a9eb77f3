"""A Jacobian and a Hessian built one output at a time against the same built in one batched
pass (lint TD104's slow form and its cure).

``torch.autograd.functional.jacobian`` and ``hessian`` default to ``vectorize=False``: one
backward pass per output element. ``vectorize=True`` batches them with vmap. Each pair runs on
a small tanh MLP (what a PINN, a Jacobian regulariser or a Neural ODE's divergence term
differentiates), at two output sizes; outputs compared.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.functional import hessian, jacobian

from torchdoctor.measure import BenchTable, compare


def mlp(width: int, outputs: int) -> torch.nn.Module:
    """A fixed ``outputs -> width -> outputs`` tanh MLP (seeded).

    Example:
        >>> mlp(32, 4)(torch.zeros(4)).shape
        torch.Size([4])
    """
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(outputs, width), torch.nn.Tanh(), torch.nn.Linear(width, outputs)
    )


def pair(kind: str, net: torch.nn.Module) -> tuple[Callable, Callable]:
    """(one output at a time, batched) for ``kind`` "jacobian" (of ``net``) or "hessian" (of
    its output's sum).

    Example:
        >>> rows, batched = pair("hessian", mlp(8, 3))
        >>> torch.allclose(rows(torch.ones(3)), batched(torch.ones(3)), atol=1e-6)
        True
    """
    if kind == "jacobian":
        return (lambda x: jacobian(net, x)), (lambda x: jacobian(net, x, vectorize=True))
    total = lambda v: net(v).sum()  # noqa: E731
    return (lambda x: hessian(total, x)), (lambda x: hessian(total, x, vectorize=True))


def run(quick: bool = False) -> list[BenchTable]:
    """Each kind at two sizes, one output at a time vs batched.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.columns[:3], len(table.rows)
        (['case', 'one at a time ms', 'vectorize=True ms'], 2)
    """
    repeats = 3 if quick else 20
    table = BenchTable(
        "torch.autograd.functional.jacobian / hessian: vectorize=False (one backward pass per "
        "output, the default) vs vectorize=True (interleaved, median of per-pair ratios)",
        ["case", "one at a time ms", "vectorize=True ms", "speedup", "spread (min-max)", "IQR",
         "verdict"],
    )  # fmt: skip
    sizes = (16,) if quick else (16, 64)
    for kind in ("jacobian", "hessian"):
        for outputs in sizes:
            rows, batched = pair(kind, mlp(64, outputs))
            x = torch.randn(outputs)
            result = compare(rows, batched, x, repeats=repeats, rtol=1e-4, atol=1e-5,
                             names=("one at a time", "vectorize=True"))  # fmt: skip
            table.add_row(f"{kind} of a {outputs} -> 64 -> {outputs} tanh MLP", *result.row())
    table.notes.append(
        "speedup = one-at-a-time time / vectorized time, per interleaved pair; outputs compared; "
        f"{torch.get_num_threads()} intra-op thread(s), CPU, torch {torch.__version__}"
    )
    return [table]


if __name__ == "__main__":  # python -m torchdoctor.benchmarks.jacobian_rows [--quick]
    import sys

    for result_table in run(quick="--quick" in sys.argv):
        print(result_table.to_markdown())

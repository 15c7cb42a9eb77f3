"""A sparse x dense matrix multiply with the sparse operand in COO against CSR (the cure the
advice gives a matmul line whose operand is a sparse COO tensor: ``torch.mm[sparse_coo]``).

pytorch/examples' GCN multiplies its sparse bag-of-words features by a weight and its sparse
adjacency matrix by the node features, both stored as COO (``to_sparse()``,
``sparse_coo_tensor``). Cora's shapes: 2708 nodes, 1433 features at 1.3% density, 13,264
adjacency entries (0.2%). Each case is timed forward only (an evaluation) and forward +
backward with respect to the dense operand (training); the outputs and gradients are compared.
"""

from __future__ import annotations

import warnings

import torch

from torchdoctor.measure import BenchTable, compare

#: (case, rows, columns, density, width of the dense operand)
CASES = (
    ("features x weight: 2708 x 1433 at 1.3%, 1433 x 16", 2708, 1433, 0.013, 16),
    ("adjacency x node features: 2708 x 2708 at 0.2%, 2708 x 16", 2708, 2708, 0.002, 16),
)


def layout_pair(rows: int, cols: int, density: float, width: int):
    """(the product with a COO operand, the same with it converted to CSR once) and the dense
    operand, which requires grad.

    Example:
        >>> coo, csr, dense = layout_pair(20, 30, 0.1, 4)
        >>> torch.allclose(coo(dense), csr(dense), atol=1e-6)
        True
    """
    torch.manual_seed(0)
    values = (torch.rand(rows, cols) < density).float()
    coo = values.to_sparse()
    with warnings.catch_warnings():  # (CSR support is "beta" in torch's words)
        warnings.simplefilter("ignore")
        csr = values.to_sparse_csr()
    dense = torch.randn(cols, width, requires_grad=True)
    return (lambda x: torch.mm(coo, x)), (lambda x: torch.mm(csr, x)), dense


def run(quick: bool = False) -> list[BenchTable]:
    """COO against CSR for GCN's two products, forward and forward + backward.

    Example:
        >>> table = run(quick=True)[0]
        >>> table.columns[:3], len(table.rows)
        (['case', 'COO ms', 'CSR ms'], 2)
    """
    repeats = 5 if quick else 31
    table = BenchTable(
        "sparse x dense matmul: the sparse operand in COO vs CSR (interleaved, median of "
        "per-pair ratios)",
        ["case", "COO ms", "CSR ms", "speedup", "spread (min-max)", "IQR", "verdict"],
    )
    for name, rows, cols, density, width in CASES[:1] if quick else CASES:
        coo, csr, dense = layout_pair(rows, cols, density, width)
        for pass_, grads in (("forward", False), ("forward + backward", True)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = compare(coo, csr, dense, repeats=repeats, grads=grads, rtol=1e-4,
                                 atol=1e-5, names=("COO", "CSR"))  # fmt: skip
            table.add_row(f"{name}, {pass_}", *result.row())
    table.notes.append(
        "speedup = COO time / CSR time, per interleaved pair; the CSR copy is made once, "
        "outside the timed calls, as the advice says; 'forward + backward': the gradient "
        f"with respect to the dense operand too; {torch.get_num_threads()} intra-op thread(s), "
        f"CPU, torch {torch.__version__}"
    )
    return [table]


if __name__ == "__main__":  # python -m torchdoctor.benchmarks.<name> [--quick]
    import sys

    for result_table in run(quick="--quick" in sys.argv):
        print(result_table.to_markdown())

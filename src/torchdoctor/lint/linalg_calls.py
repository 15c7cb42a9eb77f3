"""What the TD1xx rules know of torch's linear algebra calls: inverses, products, the
factorizations and solves (where each takes its matrix and its right-hand side), and the
per-matrix functions that take a batch.

Example:
    >>> FACTORIZATIONS["torch.cholesky_solve"], "torch.cholesky_solve" in FACTORED
    ((1, ('input2', 'L'), True), True)
"""

from __future__ import annotations

import ast

INVERSES = frozenset(
    {
        "torch.inverse",
        "torch.linalg.inv",
        "torch.linalg.pinv",
        "torch.pinverse",
        "torch.linalg.inv_ex",
    }
)
INVERSE_METHODS = frozenset({"inverse", "pinverse"})
HOST_INVERSES = frozenset({"numpy.linalg.inv", "numpy.linalg.pinv"})
MATMULS = frozenset(
    {
        "torch.matmul",
        "torch.mm",
        "torch.bmm",
        "torch.mv",
        "torch.einsum",
        "torch.linalg.multi_dot",
        "torch.chain_matmul",
        "torch.linalg.matmul",
        "torch.baddbmm",
        "torch.addmm",
        "torch.tensordot",
        "torch.nn.functional.linear",  # F.linear(x, A_inv) = x @ A_inv.T
        "numpy.dot",  # (a host inverse: np.linalg.inv(cov.cpu().numpy()))
        "numpy.matmul",
        "numpy.einsum",
        "numpy.tensordot",
        "numpy.linalg.multi_dot",
    }
)
MATMUL_METHODS = frozenset({"matmul", "mm", "bmm", "mv", "__matmul__", "__rmatmul__"})
#: methods that keep a matrix a matrix on its way into a product: inv(A).unsqueeze(0) @ x
SHAPE_METHODS = frozenset(
    {"to", "float", "double", "half", "unsqueeze", "expand", "expand_as", "transpose",
     "permute", "contiguous", "reshape", "view", "t"}
)  # fmt: skip
#: factorization/solve -> (position of the matrix argument, its keyword names, is a solve).
FACTORIZATIONS: dict[str, tuple[int, tuple[str, ...], bool]] = {
    "torch.linalg.solve": (0, ("A",), True),
    "torch.linalg.solve_ex": (0, ("A",), True),
    "torch.linalg.solve_triangular": (0, ("A",), True),
    "torch.triangular_solve": (1, ("A",), True),
    "torch.cholesky_solve": (1, ("input2", "L"), True),
    "torch.linalg.lu_solve": (0, ("LU",), True),
    "torch.linalg.lstsq": (0, ("A",), True),
    "torch.linalg.cholesky": (0, ("A", "input"), False),
    "torch.linalg.cholesky_ex": (0, ("A", "input"), False),
    "torch.cholesky": (0, ("input",), False),
    "torch.linalg.lu_factor": (0, ("A",), False),
    "torch.linalg.lu_factor_ex": (0, ("A",), False),
    "torch.linalg.lu": (0, ("A",), False),
    "torch.linalg.eigh": (0, ("A",), False),
    "torch.linalg.eigvalsh": (0, ("A",), False),
    "torch.linalg.inv": (0, ("A",), False),
    "torch.inverse": (0, ("input",), False),
}
#: solves whose matrix argument is already a factor: nothing is factored again in a loop
FACTORED = frozenset({"torch.cholesky_solve", "torch.linalg.lu_solve",
                       "torch.linalg.solve_triangular", "torch.triangular_solve"})  # fmt: skip
#: position of a solve's right-hand side (default 1: ``solve(A, B)``)
RHS = {"torch.cholesky_solve": 0, "torch.triangular_solve": 0, "torch.linalg.lu_solve": 2}


def carried_rhs(call: ast.Call, position: int, loop: ast.AST) -> bool:
    """The right-hand side of ``call`` (argument ``position``) reads a name the loop assigns
    at this call or after it: each solve starts from the last one's result (a time-stepping
    scheme ``u = torch.cholesky_solve(u, L)``), so the right-hand sides cannot be batched.

    Example:
        >>> loop = ast.parse("for _ in range(9):\\n    u = torch.cholesky_solve(u, L)\\n").body[0]
        >>> carried_rhs(loop.body[0].value, 0, loop)
        True
    """
    if len(call.args) <= position:
        return False
    names = {n.id for n in ast.walk(call.args[position]) if isinstance(n, ast.Name)}
    targets = [loop.target] if isinstance(loop, (ast.For, ast.AsyncFor)) else [
        g.target for g in getattr(loop, "generators", ())]  # fmt: skip
    names -= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}  # (items)
    return any(
        isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id in names
        and n.lineno >= call.lineno
        for n in ast.walk(loop)
    )  # fmt: skip


#: more per-matrix functions that take a batch (..., n, n): TD103 only
BATCHED_LINALG: dict[str, tuple[int, tuple[str, ...], bool]] = {
    **FACTORIZATIONS,
    "torch.linalg.det": (0, ("A",), False),
    "torch.det": (0, ("input",), False),
    "torch.linalg.slogdet": (0, ("A",), False),
    "torch.slogdet": (0, ("input",), False),
    "torch.logdet": (0, ("input",), False),
    "torch.linalg.svd": (0, ("A",), False),
    "torch.linalg.svdvals": (0, ("A",), False),
    "torch.linalg.qr": (0, ("A",), False),
    "torch.linalg.eig": (0, ("A",), False),
    "torch.linalg.eigvals": (0, ("A",), False),
    "torch.linalg.pinv": (0, ("A",), False),
    "torch.pinverse": (0, ("input",), False),
    "torch.linalg.matrix_exp": (0, ("A",), False),
    "torch.matrix_exp": (0, ("input",), False),
    "torch.linalg.matrix_norm": (0, ("A",), False),
}

#: the same functions as tensor methods (``covs[b].inverse()``, ``sigma.cholesky()``)
BATCHED_LINALG_METHODS = frozenset(
    {"inverse", "pinverse", "cholesky", "det", "logdet", "slogdet", "matrix_exp"}
)

"""What the TD1xx rules know of torch's linear algebra calls: inverses, products, the
factorizations and solves (where each takes its matrix and its right-hand side), and the
per-matrix functions that take a batch.

Example:
    >>> FACTORIZATIONS["torch.cholesky_solve"], "torch.cholesky_solve" in FACTORED
    ((1, ('input2', 'L'), True), True)
"""

from __future__ import annotations

import ast
import re
from typing import Any

from torchdoctor.lint.syntax import calls_in, dotted, dotted_names_in, method_name, target_names

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
    "torch.svd": (0, ("input",), False),  # (deprecated, still everywhere: DCP's SVD head)
    "torch.qr": (0, ("input",), False),
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
    {"inverse", "pinverse", "cholesky", "det", "logdet", "slogdet", "matrix_exp", "svd", "qr"}
)


#: calls whose result differs from one iteration to the next though their inputs do not
_FRESH_EACH_CALL = re.compile(r"(?i)rand|sample|draw|shuffle|perturb|augment|dropout|normal_|"
                              r"bernoulli|multinomial|poisson|uniform_|next|read|load|recv")


def chunks(loop: ast.AST) -> bool:
    """``for i in range(0, n, bs)``: a loop over chunks of a batch.

    Example:
        >>> chunks(ast.parse("for i in range(0, n, bs):\\n    pass").body[0])
        True
    """
    it = getattr(loop, "iter", None)
    return isinstance(it, ast.Call) and dotted(it.func) == "range" and len(it.args) == 3


_PURE_BUILTINS = frozenset({"len", "int", "float", "min", "max", "abs", "round"})


def rebuilt_invariant(visitor: Any, matrix: ast.AST, loop: ast.AST) -> ast.Assign | None:
    """The one statement of the loop's own body that assigns the name ``matrix`` (every
    iteration, not under a branch), when its value is the same in every iteration: names
    the loop does not bind, torch ops and method calls of such values (a GP's ``K =
    self.kernel(self.x, self.x) + self.noise() * torch.eye(n)`` per test batch), nothing
    random or read from outside. None otherwise.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef f(x, xs, bs):\\n    for i in range(0, len(xs), bs):\\n"
        ...        "        K = x @ x.T + torch.eye(len(x))\\n"
        ...        "        L = torch.linalg.cholesky(K)\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD102']
    """
    if not isinstance(matrix, ast.Name):
        return None
    assigns = [n for n in ast.walk(loop) if isinstance(n, ast.Assign | ast.AugAssign | ast.AnnAssign)
               and matrix.id in {t for tg in getattr(n, "targets", [getattr(n, "target", None)])
                                 if tg is not None for t in target_names(tg)}]  # fmt: skip
    if len(assigns) != 1 or not isinstance(assigns[0], ast.Assign):
        return None
    assign = assigns[0]
    if len(assign.targets) != 1 or not any(s is assign for s in getattr(loop, "body", ())):
        return None
    if any(method_name(c) in ("step", "backward") for c in calls_in(loop)):
        return None  # (parameters change in place: an optimizer's loop)
    assigned = visitor.assigned_in(loop)  # (the matrix itself: S = S + 1.0 is a recurrence)
    names = set(dotted_names_in(assign.value))
    if not names or any(n == a or n.startswith(a + ".") for n in names for a in assigned):
        return None
    for call in calls_in(assign.value):
        if visitor.callee(call) & FACTORIZATIONS.keys():
            return None  # (a factor made in the loop: that line is the finding)
        called = dotted(call.func) or ""
        if _FRESH_EACH_CALL.search(called.rsplit(".", 1)[-1]):
            return None
        if not (called.startswith(("torch.", "self.")) or method_name(call) is not None
                or called in _PURE_BUILTINS):  # fmt: skip
            return None  # (a function of the user's: it may read anything)
    return assign

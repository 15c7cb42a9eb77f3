"""TD1xx: linear algebra (seed 000): explicit inverses and factorizations inside loops."""

from __future__ import annotations

import ast

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import RuleVisitor, method_name, positional

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
    }
)
MATMUL_METHODS = frozenset({"matmul", "mm", "bmm", "mv", "__matmul__", "__rmatmul__"})
#: methods that keep a matrix a matrix on its way into a product: inv(A).unsqueeze(0) @ x
_SHAPE_METHODS = frozenset(
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


def _matrix_arg(call: ast.Call, position: int, keywords: tuple[str, ...]):
    args = positional(call)
    if len(args) > position:
        return args[position]
    for kw in call.keywords:
        if kw.arg in keywords:
            return kw.value
    return None


#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).
RULES = (
    Rule(
        "TD101",
        "inverse-then-multiply",
        "warning",
        "explicit inverse whose result is multiplied",
        "use torch.linalg.solve(A, B), or a Cholesky factor with cholesky_solve / "
        "solve_triangular (whitening: torchdoctor.ops.whiten)",
        "y = torch.linalg.inv(S) @ x",
        "y = torch.linalg.solve(S, x)",
        "torchdoctor.ops.cholesky_factor",
        seed="000",
    ),
    Rule(
        "TD102",
        "factorization-in-loop",
        "warning",
        "solve/factorization of a loop-invariant matrix inside a loop",
        "factor the matrix once before the loop and solve all right-hand sides in one batched call",
        "for b in rhs:\n    xs.append(torch.linalg.solve(A, b))",
        "L = torch.linalg.cholesky(A)\nX = torch.cholesky_solve(torch.stack(rhs, -1), L)",
        "torchdoctor.ops.cholesky_factor",
        seed="000",
    ),
)


class LinalgRules(RuleVisitor):
    """TD101 explicit inverse then multiplied; TD102 factorization of an invariant matrix in a
    loop.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> [f.code for f in lint_source("import torch\\nfor b in bs:\\n    x = torch.linalg.solve(A, b)\\n")]
        ['TD102']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (
        (
            r"\b(inv|inv_ex|inverse|pinv|pinverse|solve\w*|\w*_solve|cholesky\w*|lu_factor\w*|lu|"
            r"eigh|eigvalsh|lstsq)\b",
        ),
    )

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        is_inverse = bool(names & INVERSES) or (
            method_name(node) in INVERSE_METHODS and not node.args and not node.keywords
        )
        if is_inverse:
            use = self._multiplied_use(node)
            if use is not None:
                self.report(
                    node,
                    "TD101",
                    f"explicit inverse `{self.code_of(node)}` is multiplied ({use}): solve "
                    "instead (torch.linalg.solve, or cholesky + cholesky_solve/solve_triangular; "
                    "whitening and Mahalanobis: torchdoctor.ops.whiten / pairwise_mahalanobis)",
                )
        for name in names & FACTORIZATIONS.keys():
            position, keywords, is_solve = FACTORIZATIONS[name]
            matrix = _matrix_arg(node, position, keywords)
            loops = self.enclosing_loops(node)
            if matrix is None or not loops or not self.is_invariant(matrix, loops[0]):
                continue
            short = name.rsplit(".", 1)[-1]
            if is_solve:
                msg = (
                    f"`{short}` with loop-invariant matrix `{self.code_of(matrix)}` inside a "
                    "loop: factor it once before the loop and solve all right-hand sides in one "
                    "batched call (stack them as columns)"
                )
            else:
                msg = (
                    f"`{short}` of loop-invariant matrix `{self.code_of(matrix)}` is recomputed "
                    "every iteration: compute it once before the loop"
                )
            self.report(node, "TD102", msg)
            break

    # -- TD101 helpers ------------------------------------------------------------------------
    def _multiplied_use(self, call: ast.Call) -> str | None:
        """Describe how the inverse's value gets multiplied, or None if it is not."""
        if self._in_matmul(call):
            return "directly"
        parent = self.parent(call)
        if isinstance(parent, ast.Assign) and len(parent.targets) == 1 and parent.value is call:
            target = parent.targets[0]
            if isinstance(target, ast.Tuple) and target.elts:  # A_inv, info = inv_ex(A)
                target = target.elts[0]
            if isinstance(target, ast.Name):
                scope = self.enclosing_scope(call)
                for name in ast.walk(scope):
                    if not isinstance(name, ast.Name) or name.id != target.id:
                        continue
                    if name is target or not isinstance(name.ctx, ast.Load):
                        continue
                    if self._in_matmul(name):
                        return f"`{target.id}` is used in a product"
        return None

    def _in_matmul(self, node: ast.AST) -> bool:
        parent = self.parent(node)
        # Walk through harmless wrappers: (A), A.T, A.mT, A.to(...), A.float()
        while True:
            if isinstance(parent, ast.Attribute) and parent.attr in {"T", "mT", "H", "mH"}:
                node, parent = parent, self.parent(parent)
                continue
            if isinstance(parent, ast.Attribute) and parent.value is node:
                grand = self.parent(parent)
                if (
                    isinstance(grand, ast.Call)
                    and grand.func is parent
                    and (parent.attr in _SHAPE_METHODS)
                ):
                    node, parent = grand, self.parent(grand)
                    continue
            break
        if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.MatMult):
            return True
        if isinstance(parent, ast.Attribute) and parent.value is node:
            grand = self.parent(parent)
            return isinstance(grand, ast.Call) and parent.attr in MATMUL_METHODS
        if isinstance(parent, ast.keyword):
            parent = self.parent(parent)
            node = None
        if isinstance(parent, ast.Call) and parent.func is not node:
            if self.callee(parent) & MATMULS:
                return True
            return method_name(parent) in MATMUL_METHODS
        return False

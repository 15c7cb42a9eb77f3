"""TD1xx: linear algebra (seed 000): explicit inverses and factorizations inside loops.

TD102 is a factorization of the *same* matrix in every iteration; TD103 one of a *different*
matrix per iteration, each an item of a batch (``covs[b]``, ``for cov in covs``): torch.linalg
takes batches (``(..., n, n)``), so one call replaces the loop.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.linalg_calls import (
    BATCHED_LINALG,
    BATCHED_LINALG_METHODS,
    FACTORED,
    FACTORIZATIONS,
    HOST_INVERSES,
    INVERSE_METHODS,
    INVERSES,
    MATMUL_METHODS,
    MATMULS,
    RHS,
    SHAPE_METHODS,
    carried_rhs,
    chunks,
    rebuilt_invariant,
)
from torchdoctor.lint.loop_shapes import NOT_A_BATCH, index_names, per_item_names
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import (
    COMPREHENSIONS,
    FOR,
    RuleVisitor,
    dotted,
    dotted_names_in,
    method_name,
    positional,
)

#: methods that add items to a container: a loop that indexes what it grows is a recurrence
#: per-item calls torchdoctor.ops.cholesky_factor replaces (an SPD factor, inverse or solve);
#: a determinant, an SVD or an eigendecomposition gets the batched torch.linalg call only
_FACTOR_SOLVES = frozenset(
    {"cholesky", "cholesky_ex", "inv", "inv_ex", "inverse", "solve", "cholesky_solve",
     "cholesky_inverse", "solve_triangular"}
)  # fmt: skip
_GROWS = frozenset({"append", "extend", "insert", "add", "update", "__setitem__"})
#: names of a batch of equally sized matrices a loop may walk
_MATRIX_BATCH = re.compile(
    r"cov|sigma|mat|kernel|gram|precision|hess|fisher|jac|rot|affine|homog|spd", re.IGNORECASE
)


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
    Rule(
        "TD103",
        "per-item-linalg-in-loop",
        "warning",
        "a factorization, solve, inverse or determinant of one matrix of a batch per loop "
        "iteration (for b in range(B): cholesky(covs[b])): torch.linalg takes batches",
        "stack the matrices (..., n, n) and make one batched call: one kernel instead of one "
        "per item, and no Python loop",
        "for b in range(covs.shape[0]):\n    Ls.append(torch.linalg.cholesky(covs[b]))",
        "Ls = torch.linalg.cholesky(covs)  # covs: (B, n, n)",
        "torchdoctor.ops.cholesky_factor",
        seed="000",
    ),
)


class LinalgRules(RuleVisitor):
    """TD101 explicit inverse then multiplied; TD102 factorization of an invariant matrix in a
    loop; TD103 one matrix of a batch factored per iteration.

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
            r"eigh|eigvalsh|eig|eigvals|lstsq|det|slogdet|logdet|svd|svdvals|qr|matrix_exp|"
            r"matrix_norm)\b",
        ),
    )

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        on_host = bool(names & HOST_INVERSES) and bool(node.args) and (
            self.has_host_copy_resolved(node.args[0], self.enclosing_scope(node))
        )  # (NumPy inverting tensor data copied to the host)
        is_inverse = on_host or bool(names & INVERSES) or (
            method_name(node) in INVERSE_METHODS and not node.args and not node.keywords
        )
        if is_inverse:
            use = self._multiplied_use(node)
            if use is not None:
                self.report(
                    node,
                    "TD101",
                    f"explicit inverse `{self.code_of(node)}`"
                    + (" of tensor data copied to the host" if on_host else "")
                    + f" is multiplied ({use}): solve "
                    + ("on the device " if on_host else "")
                    + "instead (torch.linalg.solve, or cholesky + cholesky_solve/"
                    "solve_triangular; whitening and Mahalanobis: torchdoctor.ops.whiten / "
                    "pairwise_mahalanobis)",
                )
        for name in names & FACTORIZATIONS.keys():
            position, keywords, is_solve = FACTORIZATIONS[name]
            matrix = _matrix_arg(node, position, keywords)
            loops = self.enclosing_loops(node)
            if matrix is None or not loops:
                continue
            invariant = self.is_invariant(matrix, loops[0])
            rebuilt = None if invariant else rebuilt_invariant(self, matrix, loops[0])
            if not invariant and rebuilt is None:
                continue
            short = name.rsplit(".", 1)[-1]
            if rebuilt is not None:
                self.report(
                    node,
                    "TD102",
                    f"`{short}` of `{self.code_of(matrix)}`, which line {rebuilt.lineno} builds "
                    "again every iteration from values the loop does not change "
                    f"(`{self.code_of(rebuilt.value)}`): build and factor it once before the "
                    "loop" + (", then solve each right-hand side with the factor inside it"
                              if is_solve else ""),
                )
                return
            carried = is_solve and carried_rhs(node, RHS.get(name, 1), loops[0])
            if carried and name in FACTORED:
                return  # (the factor made once, the next state solved from the last: as it should)
            if name in FACTORED and chunks(loops[0]):
                return  # (the factor made once, the right-hand sides solved a chunk at a time
                # to bound memory: a GP's predictive variance over 4,096 test points a step)
            if carried:
                msg = (
                    f"`{short}` with loop-invariant matrix `{self.code_of(matrix)}` factors it "
                    "again every iteration (each right-hand side comes from the last solve): "
                    "factor it once before the loop (torch.linalg.cholesky for an SPD matrix, "
                    "else torch.linalg.lu_factor) and solve with torch.cholesky_solve / "
                    "torch.linalg.lu_solve inside it"
                )
            elif is_solve:
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
            return
        linalg = self.linalg_matrix(node)
        if linalg is not None:
            short, matrix = linalg
            found = None if matrix is None else self._batch_item(matrix, node)
            if found is not None and self._first_in_loop(node, found[1]):
                item = found[0]
                self.report(
                    node,
                    "TD103",
                    f"`{short}` of one matrix per iteration ({item}): torch.linalg functions "
                    "take a batch (..., n, n): stack the matrices and make one batched call "
                    "before the loop (one kernel instead of one per item, no Python loop)",
                    cure=short in _FACTOR_SOLVES,  # (cholesky_factor: SPD factors and solves)
                )

    # -- TD103 helpers ------------------------------------------------------------------------
    def linalg_matrix(self, call: ast.Call) -> tuple[str, ast.AST | None] | None:
        """``(short name, matrix)`` of a linear-algebra call that takes a batch of matrices:
        ``torch.linalg.cholesky(covs[b])`` or the method form ``covs[b].inverse()``; None for
        any other call."""
        for name in self.callee(call) & BATCHED_LINALG.keys():
            position, keywords, _ = BATCHED_LINALG[name]
            return name.rsplit(".", 1)[-1], _matrix_arg(call, position, keywords)
        if (
            method_name(call) in BATCHED_LINALG_METHODS
            and not call.args
            and not call.keywords
            and not self.callee(call)
        ):
            return method_name(call), call.func.value  # type: ignore[attr-defined]
        return None

    def _batch_item(self, matrix: ast.AST, call: ast.Call) -> tuple[str, ast.AST] | None:
        """How ``matrix`` is one item of a batch the innermost loop walks (``covs[b]``, the
        loop variable of ``for cov in covs``), and that loop; or None. A loop that trains, or that updates
        what it indexes (a recurrence: a Kalman filter's ``P``), is not one to batch."""
        loops = self.enclosing_loops(call)
        if not loops:
            return None
        loop = loops[0]
        if isinstance(loop, FOR) and self.is_training_body(loop):
            return None
        targets = self.loop_targets(loop)
        assigned = self.assigned_in(loop)
        derived = per_item_names(loop, targets)
        exprs = [matrix]
        if isinstance(matrix, ast.Name) and matrix.id not in targets:
            # cov = feats[b].T @ feats[b] in the loop, then cholesky(cov)
            body = loop.body if isinstance(loop, FOR) else []
            exprs = [
                stmt.value
                for stmt in ast.walk(ast.Module(body=body, type_ignores=[]))
                if isinstance(stmt, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == matrix.id for t in stmt.targets)
            ]
            if len(exprs) != 1:
                return None
            assigned = assigned - {matrix.id}
        for expr in exprs:
            indexed = [
                sub
                for sub in ast.walk(expr)
                if isinstance(sub, ast.Subscript)
                and index_names(sub.slice) & targets
                and isinstance(sub.ctx, ast.Load)
            ]
            others = set(dotted_names_in(expr)) - targets
            carried = assigned - derived.keys()
            if any(n in carried or n.split(".")[0] in carried for n in others) or (
                others & self._grown_in(loop)
            ):
                return None  # depends on what the loop updates: a recurrence
            indexed = [
                sub for sub in indexed if not NOT_A_BATCH.search(dotted(sub.value) or "")
            ] or [derived[n] for n in sorted(others & derived.keys())]
            if indexed:
                made = f"`{matrix.id}`, made from " if expr is not matrix else ""  # type: ignore[attr-defined]
                return f"{made}`{self.code_of(indexed[0])}`", loop
            if isinstance(expr, ast.Name) and expr.id in targets and self._walks_items(loop, expr.id):
                return f"`{expr.id}`, each item the loop takes", loop
        return None

    @staticmethod
    def _grown_in(loop: ast.AST) -> set[str]:
        """Names the loop appends to or writes items of (``states.append(...)``,
        ``P[t + 1] = ...``)."""
        out: set[str] = set()
        for node in ast.walk(loop):
            if isinstance(node, ast.Call) and method_name(node) in _GROWS:
                out.add(dotted(node.func.value) or "")
            elif isinstance(node, (ast.Assign, ast.AugAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(t, ast.Subscript):
                        out.add(dotted(t.value) or "")
        return out - {""}

    def _first_in_loop(self, call: ast.Call, loop: ast.AST) -> bool:
        """``call`` is the loop's first (in source order) per-item call: one finding a loop."""
        for other in sorted(
            (c for c in ast.walk(loop) if isinstance(c, ast.Call)),
            key=lambda c: (c.lineno, c.col_offset),
        ):
            if other is call:
                return True
            linalg = self.linalg_matrix(other)
            matrix = None if linalg is None else linalg[1]
            found = None if matrix is None else self._batch_item(matrix, other)
            if found is not None and found[1] is loop:
                return False
        return True

    def _walks_items(self, loop: ast.AST, name: str) -> bool:
        """The loop takes ``name`` from the items of a collection (``for cov in covs``,
        ``for k, (mu, cov) in enumerate(zip(means, covs))``), not numbers."""
        pairs = [(loop.target, loop.iter)] if isinstance(loop, FOR) else []
        if isinstance(loop, COMPREHENSIONS):
            pairs = [(g.target, g.iter) for g in loop.generators]
        for target, it in pairs:
            it = _source_of(name, target, it)
            if isinstance(it, (ast.Name, ast.Attribute)):
                # a stack of matrices (covs, sigmas, kernels), not a list of layers' weights of
                # different shapes
                name = (dotted(it) or "").rsplit(".", 1)[-1]
                return bool(_MATRIX_BATCH.search(name)) and not NOT_A_BATCH.search(name)
        return False

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
        # Walk through harmless wrappers: (A), A.T, A.mT, A.to(...), A.float(), and an index
        # (A_inv[b], torch.linalg.inv(R)[:, :, None]: the inverse's entries, broadcast)
        while True:
            if isinstance(parent, ast.Attribute) and parent.attr in {"T", "mT", "H", "mH"}:
                node, parent = parent, self.parent(parent)
                continue
            if isinstance(parent, ast.Subscript) and parent.value is node:
                node, parent = parent, self.parent(parent)
                continue
            if isinstance(parent, ast.Attribute) and parent.value is node:
                grand = self.parent(parent)
                if (
                    isinstance(grand, ast.Call)
                    and grand.func is parent
                    and (parent.attr in SHAPE_METHODS)
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


def _source_of(name: str, target: ast.AST, it: ast.AST) -> ast.AST | None:
    """The collection whose items a loop binds to ``name``: ``covs`` for ``cov`` in
    ``for k, (mu, cov) in enumerate(zip(means, covs))``; None when ``name`` is a number
    (``range``) or the iterable is not a plain collection.

    Example:
        >>> loop = ast.parse("for k, (mu, cov) in enumerate(zip(means, covs)): pass").body[0]
        >>> ast.unparse(_source_of("cov", loop.target, loop.iter))
        'covs'
    """
    while isinstance(it, ast.Call) and method_name(it) is None and it.args:
        func = getattr(it.func, "id", "")
        if func in {"tqdm", "list", "reversed", "sorted"}:
            it = it.args[0]
        elif func == "enumerate" and isinstance(target, ast.Tuple) and len(target.elts) == 2:
            target, it = target.elts[1], it.args[0]
        elif func == "zip" and isinstance(target, ast.Tuple) and len(target.elts) == len(it.args):
            hits = [(t, a) for t, a in zip(target.elts, it.args)
                    if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(t))]
            if not hits:
                return None
            target, it = hits[0]
        else:
            return None
    if isinstance(target, ast.Name) and target.id != name:
        return None
    if isinstance(it, ast.Call) and dotted(it.func) == "torch.unbind" and it.args:
        it = it.args[0]
    elif isinstance(it, ast.Call) and method_name(it) == "unbind":  # for c in covs.unbind(0)
        it = it.func.value  # type: ignore[attr-defined]
    return it

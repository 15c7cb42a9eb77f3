"""TD206: an iterative solver whose stop test reads a tensor on the host every iteration.

``while err > tol:`` with ``err = (u_new - u).abs().max().item()`` (Sinkhorn, power iteration,
fixed-point and conjugate-gradient loops), or ``for it in range(max_iter): ...; if err < tol:
break`` with ``err`` a tensor: every iteration waits for the GPU to finish before Python can
decide whether to run the next, so kernel launches never run ahead and the GPU idles between
iterations. Testing every k iterations (``if it % 10 == 0 and err < tol``) keeps the launch
queue full for k - 1 iterations; a fixed iteration count removes the syncs.

Not reported: a test that is already periodic, and an outer loop whose iterations each run an
inner solver (a call given a tolerance or an iteration limit): one more sync per outer
iteration costs little next to it.

A mixin of :class:`torchdoctor.lint.rules_sync.SyncRules`: a line TD201 already reports (a host
read in a training step) is not reported again as TD206; a stop test in ``forward`` (or a
method it runs) is TD206's, not TD205's (a ``break`` needs the value on the host: test it less
often).
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.tensors import NOT_TENSORS, SCALAR_CASTS, TORCH_TENSOR_FUNCTION
from torchdoctor.lint.visitor import FOR, FUNCTIONS, HOST_COPY_METHODS, dotted, method_name

RULES = (
    Rule(
        "TD206",
        "convergence-check-sync-per-iteration",
        "warning",
        "an iterative solver's stop test reads a tensor on the host every iteration (while err "
        "> tol with err = ....item(), if err < tol: break), and so does a decoding loop's stop "
        "test against a threshold (if torch.sigmoid(gate).item() > thr: break, Tacotron's stop "
        "token): one host-device sync per iteration (in a loop that trains, calling backward or "
        "an optimizer step, TD201 reports the read: one finding a line)",
        "test convergence every k iterations (`if it % 10 == 0 and err < tol: break`), or run a "
        "fixed number of iterations",
        "u = torch.ones_like(x)\nerr = 1.0\nwhile err > 1e-6:\n    v = u / (S @ u)\n"
        "    err = (v - u).abs().max().item()\n    u = v",
        "u = torch.ones_like(x)\nfor it in range(1000):\n    v = u / (S @ u)\n"
        "    if it % 10 == 0 and (v - u).abs().max() < 1e-6:\n        break\n    u = v",
    ),
)

#: a name that holds a tolerance: tol, atol, xtol (SciPy's), eps, threshold, stop_thr, or a
#: decoder's stop level: draft_confidence (speculative decoding's early exit), min_conf, cutoff
_TOLERANCE = re.compile(
    r"(^|_)([xfg]?tol|tolerance|eps|epsilon|thr|thres|thresh|threshold|atol|rtol|precision|"
    r"stopthr|conf|confidence|cutoff)(_|\d|$)",
    re.IGNORECASE,
)
#: a stop level named as a bound (min_trans, max_error, min_delta) in a stop test; not a count
_STOP_LEVEL = re.compile(r"^(min|max)_(?!(iters?|steps?|len|length|tokens|new_tokens|size)$)[a-z]", re.I)
#: an iteration limit passed to an inner solver: max_iter, num_iter, numItermax
_ITERATIONS = re.compile(r"^(max_?iters?|num_?iters?|n_?iters?|num_?itermax|max_?steps)$", re.I)
#: methods only tensors have (NumPy arrays and Python numbers do not): tensor evidence
_TENSOR_METHODS = frozenset(
    {"norm", "abs", "sub", "add", "mul", "div", "pow", "sqrt", "clamp", "float", "double",
     "detach", "amax", "amin", "square", "exp", "log"}
)  # fmt: skip
_NOT_TORCH = ("numpy.", "scipy.", "math.", "builtins.abs", "builtins.max", "builtins.min")


#: closeness tests: a stop test of their own, not an inner solver
_CLOSENESS = frozenset({"torch.allclose", "torch.isclose"})

class ConvergenceSyncs:
    """TD206, checked by SyncRules on ``while`` and ``for ... in range(...)`` loops.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef solve(S, x, tol):\\n    u = torch.ones_like(x)\\n"
        ...        "    err = 1.0\\n    while err > tol:\\n        v = u / (S @ u)\\n"
        ...        "        err = (v - u).abs().max().item()\\n        u = v\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(7, 'TD206')]
    """

    def report(self, node: ast.AST, code: str, message: str | None = None, **kwargs) -> None:
        """One sync finding per line: TD201 (a training step) before TD206, TD206 before
        TD205 (a solver's stop test in ``forward``: test it every k iterations, as TD206 says;
        TD205's "keep it a tensor" cannot decide a ``break``)."""
        line = getattr(node, "lineno", 0)
        above = {"TD206": {"TD201"}, "TD205": {"TD206"}}.get(code, set())
        below = {"TD201": {"TD206"}, "TD206": {"TD205"}}.get(code, set())
        if any(f.line == line and f.code in above for f in self.findings):
            return
        self.findings = [f for f in self.findings if not (f.code in below and f.line == line)]
        super().report(node, code, message, **kwargs)  # type: ignore[misc]

    def _check_convergence(self, loop: ast.AST) -> None:
        tests: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(loop, ast.While):
            tests.append((loop.test, loop))
        elif not self._counts_iterations(loop.iter):  # type: ignore[attr-defined]
            return
        if self._runs_inner_solver(loop):
            return  # each iteration solves a whole problem: one more sync costs little
        tests += [(stmt.test, stmt) for stmt in self._break_tests(loop)]
        for test, holder in tests:
            if not self._tolerance_test(test, set(self.loop_targets(loop))):
                continue
            if self.is_gate_test(test, holder):
                continue  # `if it % 10 == 0 and err < tol:` already periodic
            if holder is not loop and self.under_log_gate(holder, loop):
                continue
            site = self._host_read_site(test, loop)
            if site is None or self._reads_host_elsewhere(loop, test):
                continue
            where = "" if site is test else f" (the read: `{self.code_of(site)}`)"
            self.report(
                site,
                "TD206",
                f"the stop test `{self.code_of(test)}` reads a tensor on the host every "
                f"iteration{where}: one host-device sync per iteration, the GPU idles while "
                "Python decides; test every k iterations (`if it % 10 == 0 and ...`), or run a "
                "fixed number of iterations",
            )
            return

    def _counts_iterations(self, iterable: ast.AST) -> bool:
        """``range(max_iter)``, ``itertools.count()``: a loop over iteration numbers."""
        return isinstance(iterable, ast.Call) and bool(
            self.callee(iterable) & {"builtins.range", "itertools.count"}
        )

    def _runs_inner_solver(self, loop: ast.AST) -> bool:
        """A call in the loop gets a tolerance or an iteration limit (``solve(..., tol=1e-5,
        max_iter=n)``): each iteration runs an inner solver with its own stop test (not the
        stop test's own ``torch.allclose(new, old, atol=1e-4)``)."""
        for call in (n for stmt in loop.body for n in ast.walk(stmt)):  # type: ignore[attr-defined]
            if not isinstance(call, ast.Call) or self.callee(call) & _CLOSENESS:
                continue
            names = [k.arg or "" for k in call.keywords]
            names += [(dotted(a) or "").rsplit(".", 1)[-1] for a in call.args]
            if any(_TOLERANCE.search(n) or _ITERATIONS.search(n) for n in names if n):
                return True
        return False

    def _reads_host_elsewhere(self, loop: ast.AST, test: ast.AST) -> bool:
        """The loop reads a tensor on the host every iteration for another purpose too
        (``i = int(torch.argmax(gains).item())`` in a greedy selection): it waits for the GPU
        anyway, and testing less often would not remove that wait."""
        names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
        own = {id(n) for n in ast.walk(test)}
        for stmt in _assignments(loop, names):
            own |= {id(n) for n in ast.walk(stmt)}
        for node in (n for stmt in loop.body for n in ast.walk(stmt)):  # type: ignore[attr-defined]
            if not isinstance(node, ast.Call) or id(node) in own:
                continue
            if self._host_read(node) is node and not self.under_log_gate(node, loop):
                return True
        return False

    def _break_tests(self, loop: ast.AST):
        """``if <test>: ... break`` statements of the loop (not of a nested loop)."""
        stack = list(loop.body)
        while stack:
            node = stack.pop()
            if isinstance(node, (*FOR, ast.While, *FUNCTIONS, ast.ClassDef)):
                continue
            if isinstance(node, ast.If) and any(isinstance(s, ast.Break) for s in node.body):
                yield node
            stack.extend(n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt))

    def _tolerance_test(self, test: ast.AST, counters: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
        """A comparison with a tolerance (a name like ``tol`` / ``eps``, a small float) or a
        closeness test (``torch.allclose``); not the loop's counter against a limit (a
        molecule sampler's ``t >= self.min_blocks``)."""
        for node in ast.walk(test):
            if isinstance(node, ast.Call) and self.callee(node) & _CLOSENESS:
                return True
            if not isinstance(node, ast.Compare) or counters & {
                    n.id for n in ast.walk(node) if isinstance(n, ast.Name)}:  # fmt: skip
                continue
            for side in [node.left, *node.comparators]:
                for name in _side_names(side):
                    if _TOLERANCE.search(name) or _STOP_LEVEL.search(name):
                        return True
                value = side.value if isinstance(side, ast.Constant) else None
                if isinstance(value, float) and 0 < abs(value) < 0.01:
                    return True
        return False

    def _host_read_site(self, test: ast.AST, loop: ast.AST) -> ast.AST | None:
        """Where the test's tensor is read on the host every iteration: a ``.item()`` /
        ``float(t)`` in the test or in the loop's assignment of a name it compares (that
        call), or a tensor compared in the test itself (the test)."""
        read = self._host_read(test)
        if read is not None:
            return read
        if _shape_only(test):
            return None  # (len(pts) > max_points: a tensor's size is known on the host)
        if self._is_tensor(test):
            return test
        names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
        for stmt in _assignments(loop, names):
            if self.under_log_gate(stmt, loop):
                return None
            read = self._host_read(stmt.value)
            if read is not None:
                return read
            if self._is_tensor(stmt.value):
                return test
        return None

    def _host_read(self, expr: ast.AST) -> ast.Call | None:
        for call in (n for n in ast.walk(expr) if isinstance(n, ast.Call)):
            if method_name(call) in HOST_COPY_METHODS - {"numpy"} and not call.args:
                if self._is_tensor(call.func.value, strict=False):  # type: ignore[attr-defined]
                    return call
            elif self.callee(call) & SCALAR_CASTS.keys() and len(call.args) == 1:
                if self._is_tensor(call.args[0]):
                    return call
        return None

    def _is_tensor(self, expr: ast.AST, strict: bool = True) -> bool:
        """Tensor evidence: a torch function or a tensor-only method in the expression, or a
        name the function assigns from a torch call; no NumPy / math in it. With ``strict``
        off (the receiver of ``.item()``), only the absence of NumPy is asked."""
        calls = [n for n in ast.walk(expr) if isinstance(n, ast.Call)]
        if any(q.startswith(_NOT_TORCH) for c in calls for q in self.callee(c)):
            return False
        if not strict:
            return True
        if any(
            TORCH_TENSOR_FUNCTION.match(q) and q not in NOT_TENSORS
            for c in calls
            for q in self.callee(c)
        ) or any(method_name(c) in _TENSOR_METHODS for c in calls):
            return True
        if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.MatMult) for n in ast.walk(expr)):
            return True
        scope = self.enclosing_scope(expr)
        for name in {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}:
            for value in self.assigned_values(scope, name):
                if isinstance(value, ast.Call) and any(
                    TORCH_TENSOR_FUNCTION.match(q) and q not in NOT_TENSORS
                    for q in self.callee(value)
                ):
                    return True
        return False


def _side_names(side: ast.AST) -> list[str]:
    """The last parts of the names a compared side is made of: the side itself (``tol``,
    ``self.eps``), or the names in its arithmetic (a relative tolerance, ``tol * b_norm``,
    ``rtol * ref + atol``).

    Example:
        >>> _side_names(ast.parse("tol * b_norm").body[0].value)
        ['tol', 'b_norm']
        >>> _side_names(ast.parse("self.eps").body[0].value)
        ['eps']
    """
    if isinstance(side, ast.BinOp):
        parts = [n for n in ast.walk(side) if isinstance(n, (ast.Name, ast.Attribute))]
        parts = [n for n in parts if not any(n in ast.walk(o) and n is not o for o in parts)]
        return [(dotted(n) or "").rsplit(".", 1)[-1] for n in parts if dotted(n)]
    name = (dotted(side) or "").rsplit(".", 1)[-1]
    return [name] if name else []


def _assignments(loop: ast.AST, names: set[str]) -> list[ast.Assign | ast.AugAssign]:
    """Assignments to ``names`` in the loop body (not in nested functions)."""
    out = []
    stack = list(loop.body)  # type: ignore[attr-defined]
    while stack:
        node = stack.pop()
        if isinstance(node, (*FUNCTIONS, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in names for t in node.targets
        ):
            out.append(node)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            if node.target.id in names:
                out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _shape_only(test: ast.AST) -> bool:
    """Every comparison of ``test`` compares sizes or Python numbers: ``len(x)``, ``x.shape[1]``,
    ``x.numel()`` (known on the host without a sync), no other call or subscript of a tensor.

    Example:
        >>> _shape_only(ast.parse("len(pts) > max_points or ids.shape[1] >= n").body[0].value)
        True
        >>> _shape_only(ast.parse("len(pts) > k or err < tol").body[0].value)
        False
    """
    compares = [n for n in ast.walk(test) if isinstance(n, ast.Compare)]
    if not compares:
        return False
    for node in compares:
        sides = [node.left, *node.comparators]
        sizes = [side for side in sides if _is_size(side)]
        rest = [side for side in sides if not _is_size(side)]
        if not sizes or not all(
            isinstance(n, (ast.Name, ast.Attribute, ast.Constant, ast.BinOp, ast.operator,
                           ast.Load, ast.UnaryOp, ast.unaryop))
            for side in rest for n in ast.walk(side)
        ):
            return False
    return True


def _is_size(expr: ast.AST) -> bool:
    """``len(x)``, ``x.numel()``, ``x.size(1)``, ``x.shape[1]``, ``x.ndim``."""
    if isinstance(expr, ast.Call):
        return dotted(expr.func) == "len" or method_name(expr) in {"numel", "dim", "size"}
    if isinstance(expr, ast.Subscript):
        return isinstance(expr.value, ast.Attribute) and expr.value.attr == "shape"
    return isinstance(expr, ast.Attribute) and expr.attr in {"ndim", "shape"}

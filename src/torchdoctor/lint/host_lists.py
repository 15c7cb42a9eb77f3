"""Python data a linted expression was made from tensor data copied to the host, in a loop
(TD203 reads it: ``torch.tensor(python_list, device=...)`` rebuilt every iteration): a name
unpacked from a call handed ``.tolist()`` data, bound by a loop over ``.tolist()`` data, or a
list of ``int(t)`` / ``float(t)`` casts of tensors (inline, or through the name it was assigned
to). A mixin of :class:`~torchdoctor.lint.tensor_values.TensorValues`.

Example:
    >>> from torchdoctor.lint import lint_source
    >>> src = ("import torch\\nfor imgs, targets in loader:\\n    opt.step()\\n"
    ...        "    n_fg = [int(t['labels'].gt(0).sum()) for t in targets]\\n"
    ...        "    fg = torch.tensor(n_fg, device='cuda')\\n")
    >>> sorted(f.code for f in lint_source(src))
    ['TD201', 'TD203']
"""

from __future__ import annotations

import ast

from torchdoctor.lint.loop_shapes import steps_an_environment
from torchdoctor.lint.rules_loops import LSA
from torchdoctor.lint.tensors import SCALAR_CASTS
from torchdoctor.lint.visitor import HOST_COPY_METHODS, dotted, method_name

#: builtins computing a Python number from Python numbers
HOST_ARITHMETIC = frozenset({"divmod", "int", "float", "round", "abs", "min", "max"})


class HostLists:
    """Mixin for a RuleVisitor that also has ``looks_like_tensor`` (TensorValues).

    Example:
        >>> from torchdoctor.lint.tensor_values import TensorValues
        >>> issubclass(TensorValues, HostLists)
        True
    """

    def unpacked_from_host(self, expr: ast.AST, scope: ast.AST) -> bool:
        """A name in ``expr`` unpacked from a call that takes tensor data copied to Python
        (``states, r = simulate(states, actions.tolist())``): host data every iteration
        (``assigned_values`` pairs names with values only when both sides are tuples). An
        assignment solver's result is TD303's (``rows, cols = linear_sum_assignment(c.cpu())``:
        solving on the device removes the copy back too). An
        environment's step is no such call (``obs, r, done, info = env.step(a.cpu().numpy())``):
        its observations are new host data, not the tensor data it was given.

        Example:
            >>> from torchdoctor.lint import lint_source
            >>> src = ("import torch\\nfor t in range(9):\\n"
            ...        "    s = torch.tensor(states, device='cuda')\\n"
            ...        "    states, r = simulate(states, policy(s).argmax(-1).tolist())\\n")
            >>> [f.code for f in lint_source(src)]
            ['TD203']
        """
        names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
        for node in ast.walk(scope):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and not steps_an_environment(node.value) and not self.callee(node.value) & LSA and any(isinstance(t, ast.Tuple) and names & {e.id for e in t.elts
                            if isinstance(e, ast.Name)} for t in node.targets)
                    and any(method_name(c) in HOST_COPY_METHODS
                            for c in ast.walk(node.value) if isinstance(c, ast.Call))):  # fmt: skip
                return True
        return False

    def iterated_from_host(self, expr: ast.AST, scope: ast.AST) -> bool:
        """A name in ``expr`` that a loop of ``scope`` binds from tensor data copied to Python
        (``for s, idx in zip(scores.tolist(), ids.tolist())``), directly or through one
        assignment computed from it (``b, w = divmod(idx, V)``): a beam search rebuilding
        ``torch.tensor([w], device=...)`` per candidate.

        Example:
            >>> from torchdoctor.lint import lint_source
            >>> src = ("import torch\\nfor step in range(9):\\n"
            ...        "    for idx in top.tolist():\\n        b, w = divmod(idx, 5)\\n"
            ...        "        t = torch.tensor([w], device='cuda')\\n")
            >>> [f.code for f in lint_source(src)]
            ['TD203']
        """
        names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
        host: set[str] = set()
        for loop in ast.walk(scope):
            if isinstance(loop, ast.For) and any(
                    method_name(c) in HOST_COPY_METHODS
                    for c in ast.walk(loop.iter) if isinstance(c, ast.Call)):  # fmt: skip
                host |= {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}
        if not host:
            return False
        for node in ast.walk(scope):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and all(dotted(c.func) in HOST_ARITHMETIC for c in ast.walk(node.value)
                            if isinstance(c, ast.Call))  # (arithmetic, divmod, int)
                    and host & {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}):
                host |= {n.id for n in ast.walk(node.targets[0]) if isinstance(n, ast.Name)}  # fmt: skip
        return bool(names & host)

    def cast_from_tensors(self, expr: ast.AST, scope: ast.AST) -> bool:
        """Python numbers each read from a tensor (``[int(m.sum()) for m in M]``): a sync each.

        Example:
            >>> from torchdoctor.lint import lint_source
            >>> src = ("import torch\\nfor M in data:\\n    opt.step()\\n"
            ...        "    n = torch.tensor([int(m.sum()) for m in M], device='cuda')\\n")
            >>> [f.code for f in lint_source(src)]
            ['TD203']
        """
        if isinstance(expr, ast.Name):  # (n_fg = [int(t["labels"].sum()) for t in targets])
            return any(self.cast_from_tensors(v, scope) for v in self.assigned_values(scope, expr.id)
                       if not isinstance(v, ast.Name))  # fmt: skip
        items = [expr.elt] if isinstance(expr, ast.ListComp) else getattr(expr, "elts", [])
        return any(isinstance(e, ast.Call) and len(e.args) == 1 and not e.keywords
                   and bool(set(self.callee(e)) & SCALAR_CASTS.keys())
                   and (self.looks_like_tensor(_compared(e.args[0])) or self._element_of_a_tensor(e.args[0], expr))
                   for e in items)  # fmt: skip

    def _element_of_a_tensor(self, arg: ast.AST, comp: ast.AST) -> bool:
        """``n`` of ``[int(n) for n in (tokens != PAD).sum(1)]``: each element of a device
        tensor read on the host (not of one made there: ``for k in torch.randperm(4)[:2]``)."""
        if not (isinstance(comp, ast.ListComp) and isinstance(arg, ast.Name)):
            return False
        for gen in comp.generators:
            if isinstance(gen.target, ast.Name) and gen.target.id == arg.id:
                base = gen.iter
                while isinstance(base, ast.Subscript):
                    base = base.value
                return self.looks_like_tensor(gen.iter) and not self.host_made(base)
        return False

    def read_before_rebinding(self, call: ast.Call) -> bool:
        """``np.array(boards)`` in ``boards = torch.FloatTensor(np.array(boards))`` (
        alpha-zero-general's training loop over sampled self-play examples): the statement
        reads the name before it rebinds it, so the tensor it becomes (and is later moved to
        the GPU as) is not what the array reads: Python data."""
        arg = call.args[0] if len(call.args) == 1 else None
        stmt = self.parent(call)  # type: ignore[attr-defined]
        while stmt is not None and not isinstance(stmt, ast.stmt):
            stmt = self.parent(stmt)  # type: ignore[attr-defined]
        return isinstance(arg, ast.Name) and isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == arg.id for t in stmt.targets)  # fmt: skip


def _compared(arg: ast.AST) -> ast.AST:
    """The left side of a comparison (``int((x[i] < 0.5).sum() > 0)``: a tensor compared is a
    tensor, read by the cast); else ``arg``.

    Example:
        >>> ast.unparse(_compared(ast.parse("m.sum() > 0", mode="eval").body))
        'm.sum()'
    """
    return arg.left if isinstance(arg, ast.Compare) and len(arg.ops) == 1 else arg

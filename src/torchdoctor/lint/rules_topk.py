"""TD512: a full sort whose results are only ever read up to ``k``: ``torch.topk`` selects them.

``values, idx = torch.sort(scores, descending=True)`` then ``idx[:k]`` (also ``x.sort()``,
``torch.argsort`` / ``x.argsort()``, and the slice on the last dimension, ``idx[:, :k]``,
``idx[..., :k]``) sorts every element to keep ``k`` of them; ``torch.topk(scores, k)`` selects
the ``k`` largest (``largest=False``: the smallest) without ordering the rest, and returns them
sorted. Measured on a CPU (torch 2.13, one thread, ``torchdoctor bench fused``: forward and
backward of the values, k = 16): 4.6x on 64 x 1,000 scores, 32x on 8 x 50,257 logits.

Its size may be measured besides (``if order.numel() > k: order = order[:k]``: a detector's
pre-NMS cap, topk of ``min(k, n)``), and the name may be sorted in either branch of an ``if``
(``idx = x.argsort(descending=largest)``-like pairs). Not reported: a sorted result read any
other way (a cumulative sum for top-p sampling, the whole order, an index that is not a
leading slice), a slice that starts past 0 by more than 8, a name assigned anything else
after the sort, and a sort asked to be stable (``stable=True``: ties kept in
their input order, which topk does not promise).
"""

from __future__ import annotations

import ast

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import RuleVisitor, keyword, method_name

RULES = (
    Rule(
        "TD512",
        "sort-for-top-k",
        "warning",
        "a full sort (torch.sort, argsort) whose results are only read up to k (`idx[:k]`)",
        "torch.topk(x, k) (largest=False for the smallest) selects the k without sorting the "
        "rest: 4.6-32x faster forward + backward on a CPU",
        "values, idx = torch.sort(scores, descending=True)\nbest = idx[:k]",
        "values, idx = torch.topk(scores, k)\nbest = idx",
    ),
)

_SORTS = frozenset({"torch.sort", "torch.argsort"})
_SORT_METHODS = frozenset({"sort", "argsort"})


class TopKRules(RuleVisitor):
    """TD512 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef best(scores, k):\\n"
        ...        "    values, idx = torch.sort(scores, descending=True)\\n"
        ...        "    return values[:k], idx[:k]\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(3, 'TD512')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"(?m)^\s*(?:import|from)\s+torch\b", r"sort\("),)

    def _is_sort(self, node: ast.Call) -> bool:
        """``torch.sort(x)``, ``torch.argsort(x)``, ``x.sort()``, ``x.argsort()``."""
        method = method_name(node) in _SORT_METHODS and isinstance(node.func, ast.Attribute)
        return bool(self.callee(node) & _SORTS or (method and not self.callee(node)))

    def visit_Call(self, node: ast.Call) -> None:
        if not self._is_sort(node):
            return
        stable = keyword(node, "stable")
        if isinstance(stable, ast.Constant) and stable.value is True:
            return  # (ties kept in input order on purpose: topk does not promise it)
        read = self._sliced_directly(node)
        if read is not None:
            self._report(node, read)
            return
        statement = self.parent(node)
        if _one_result(statement):  # (top = x.sort(descending=True).values; top[..., :k])
            statement = self.parent(statement)
        if not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
            return
        target = statement.targets[0]
        elts = target.elts if isinstance(target, ast.Tuple) else [target]
        if not all(isinstance(e, ast.Name) for e in elts):
            return
        names = [e.id for e in elts if e.id != "_"]  # type: ignore[attr-defined]  # (`_`: discarded)
        if not names:
            return
        scope = self.enclosing_scope(node)
        inside = {id(n) for n in ast.walk(node)}  # (torch.sort(x) into x: its input)
        found = [n for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id in names
                 and n.lineno >= node.lineno and id(n) not in inside]  # (earlier: another tensor)
        rebound = self._rebound_to_a_slice(found, target)
        if rebound is None:
            return  # (a name assigned another value, or deleted)
        uses = [n for n in found if isinstance(n.ctx, ast.Load)
                and not n.lineno > rebound.get(n.id, n.lineno)
                and not _size_read(n, self.parent(n))]  # fmt: skip
        leading = [self.parent(n) for n in uses if _leading_slice(self.parent(n))]
        if not leading or not all(_leading_slice(self.parent(n)) or _trailing_slice(
                self.parent(n)) for n in uses):  # (CLAM: the k top and the k bottom tiles)
            return
        self._report(node, leading[0], both_ends=len(leading) < len(uses))

    def _rebound_to_a_slice(self, found: list[ast.Name], target: ast.AST) -> dict | None:
        """The lines where a name of the sort's ``target`` is rebound to its own leading slice
        (``idx = idx[..., :k]``, ``vals, idx = vals[:, :k], idx[:, :k]``: later reads see
        the first k only); None when a name is assigned anything else or deleted."""
        lines: dict[str, int] = {}
        for name in found:
            if isinstance(name.ctx, ast.Load) or name is target or (
                    isinstance(target, ast.Tuple) and name in target.elts):  # fmt: skip
                continue
            statement = self.parent(name)
            value = getattr(statement, "value", None)
            if isinstance(statement, ast.Tuple) and isinstance(self.parent(statement), ast.Assign):
                value = self.parent(statement).value
                index = statement.elts.index(name)
                value = value.elts[index] if isinstance(value, ast.Tuple) else None
            if isinstance(value, ast.Call) and self._is_sort(value):
                continue  # (sorted in another branch: `if largest: idx = x.argsort(...)`)
            if not (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
                    and value.value.id == name.id and _leading_slice(value)):  # fmt: skip
                return None
            lines[name.id] = name.lineno
        return lines

    def _sliced_directly(self, node: ast.Call) -> ast.AST | None:
        """The slice that reads the sort's result in place: ``x.argsort(...)[:k]``,
        ``torch.sort(x)[0][:k]``, ``x.sort().values[:k]``; None."""
        read = self.parent(node)
        if "argsort" not in (method_name(node) or "") and not any(
            n.endswith("argsort") for n in self.callee(node)
        ):  # (sort returns (values, indices): one of them first)
            if isinstance(read, ast.Attribute) and read.attr in {"values", "indices"}:
                read = self.parent(read)
            elif (
                isinstance(read, ast.Subscript)
                and isinstance(read.slice, ast.Constant)
                and read.slice.value in (0, 1)
            ):
                read = self.parent(read)
            else:
                return None
        return read if _leading_slice(read) else None

    def _report(self, node: ast.Call, read: ast.AST, both_ends: bool = False) -> None:
        if not _along_sorted_dim(node, read, method=not self.callee(node)):
            return
        descending = keyword(node, "descending")
        largest = isinstance(descending, ast.Constant) and descending.value is True
        cut = read.slice.elts[-1] if isinstance(read.slice, ast.Tuple) else read.slice  # type: ignore[attr-defined]
        upper = str(cut.value + 1) if isinstance(cut, ast.Constant) else self.code_of(cut.upper)
        k = upper if len(upper) <= 24 else "k"
        self.report(
            node,
            "TD512",
            f"`{self.code_of(node)}` sorts every element, and only the first {k} are read "
            + ("(and the last ones) " if both_ends else "") +
            f"(`{self.code_of(read)}`): torch.topk(..., {k}"
            + ("" if largest else ", largest=False")
            + ") selects them without sorting the rest, and returns them in order "
            + ("(the last ones: a second topk with the other `largest`) " if both_ends else "")
            + ("(4.6-32x faster on a CPU)" if method_name(node) == "argsort"  # (no backward)
               else "(4.6-32x faster forward + backward on a CPU)"),
        )


def _one_result(node: ast.AST | None) -> bool:
    """``.values`` / ``.indices`` / ``[0]`` / ``[1]`` of a sort: one of its two results.

    Example:
        >>> _one_result(ast.parse("x.sort(descending=True).values", mode="eval").body)
        True
        >>> _one_result(ast.parse("torch.sort(x)[1]", mode="eval").body)
        True
    """
    if isinstance(node, ast.Attribute):
        return node.attr in {"values", "indices"}
    return (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
            and node.slice.value in (0, 1) and type(node.slice.value) is int)  # fmt: skip


def _size_read(name: ast.Name, parent: ast.AST | None) -> bool:
    """``name`` is only measured, not read: ``len(order)``, ``order.numel()``, ``order.shape``,
    ``order.size(0)``, ``order.dim()`` (``if order.numel() > k: order = order[:k]``).

    Example:
        >>> call = ast.parse("len(order)", mode="eval").body
        >>> _size_read(call.args[0], call)
        True
    """
    if isinstance(parent, ast.Call) and getattr(parent.func, "id", None) == "len":
        return True
    return isinstance(parent, ast.Attribute) and parent.attr in (
        "shape", "numel", "size", "dim", "ndim", "device", "dtype"
    )


def _leading_slice(node: ast.AST | None) -> bool:
    """``x[:k]``, ``x[0:k]``, ``x[:, :k]``, ``x[..., :k]``: the first k along the last index
    given, every other index whole; also from a small constant on (``x[:, :, 1:k + 1]``, the
    k nearest neighbours but the point itself: topk of k + 1, then drop the first).

    Example:
        >>> _leading_slice(ast.parse("x[..., 1:k + 1]", mode="eval").body)
        True
        >>> _leading_slice(ast.parse("x[k:]", mode="eval").body)
        False
    """
    if not isinstance(node, ast.Subscript) or not isinstance(node.ctx, ast.Load):
        return False
    parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    *whole, last = parts
    if isinstance(last, ast.Constant) and type(last.value) is int and 0 <= last.value < 8 and whole:
        pass  # (sorted_d[:, 0]: the nearest, one of the first k; not x[0], maybe a whole row)
    elif not isinstance(last, ast.Slice) or last.upper is None or last.step is not None:
        return False
    if isinstance(last, ast.Slice) and last.lower is not None and not (
        isinstance(last.lower, ast.Constant) and type(last.lower.value) is int
        and 0 <= last.lower.value <= 8
    ):
        return False
    return all(
        (isinstance(p, ast.Constant) and p.value is Ellipsis)
        or (isinstance(p, ast.Slice) and p.lower is None and p.upper is None and p.step is None)
        for p in whole
    )


def _trailing_slice(node: ast.AST | None) -> bool:
    """``x[-k:]``, ``x[..., -k:]``: the last k along the last index, every other index whole
    (read besides the first k, both ends of the order: two topk calls, no sort).

    Example:
        >>> [_trailing_slice(ast.parse(s, mode="eval").body) for s in ("x[-k:]", "x[k:]")]
        [True, False]
    """
    if not isinstance(node, ast.Subscript) or not isinstance(node.ctx, ast.Load):
        return False
    *whole, last = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    return (isinstance(last, ast.Slice) and last.upper is None and last.step is None
            and isinstance(last.lower, ast.UnaryOp) and isinstance(last.lower.op, ast.USub)
            and all((isinstance(p, ast.Constant) and p.value is Ellipsis) or (isinstance(
                p, ast.Slice) and p.lower is None and p.upper is None and p.step is None)
                for p in whole))  # fmt: skip


def _along_sorted_dim(call: ast.Call, read: ast.AST, method: bool) -> bool:
    """The slice ``read`` cuts the dimension the call sorted: with ``dim=d`` (a number from 0)
    the slice is the ``d``-th index (``x.argsort(0)[:k]``, ``x.argsort(1)[:, :k]``, not
    ``x.argsort(0)[:, :k]``); the default, the last dimension, is taken as the slice's.

    Example:
        >>> call = ast.parse("x.argsort(0)[:, :k]", mode="eval").body
        >>> _along_sorted_dim(call.value, call, method=True)
        False
    """
    dim = keyword(call, "dim")
    position = 0 if method else 1
    if dim is None and len(call.args) > position:
        dim = call.args[position]
    if dim is None:
        return True
    if isinstance(dim, ast.UnaryOp) and isinstance(dim.op, ast.USub):
        return True  # (counted from the end: the last index given, as for the default)
    if not (isinstance(dim, ast.Constant) and isinstance(dim.value, int)):
        return False  # (a dimension only known at run time)
    parts = read.slice.elts if isinstance(read.slice, ast.Tuple) else [read.slice]  # type: ignore[attr-defined]
    if any(isinstance(p, ast.Constant) and p.value is Ellipsis for p in parts):
        return False
    return len(parts) - 1 == dim.value

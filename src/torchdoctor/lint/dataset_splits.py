"""A dataset split off another (``train, val = random_split(data, [n, m])``,
``Subset(data, idx)``) holds what the dataset it was split from holds: a DataLoader over a split
of a ``TensorDataset`` loads from memory like one over the whole (TD401 / TD402 read the
source, :mod:`torchdoctor.lint.loader_datasets`).

Example:
    >>> from torchdoctor.lint import lint_source
    >>> src = ("import torch\\nfrom torch.utils.data import DataLoader, TensorDataset, random_split\\n"
    ...        "data = TensorDataset(torch.randn(100, 4), torch.randn(100))\\n"
    ...        "train, val = random_split(data, [80, 20])\\n"
    ...        "loader = DataLoader(train, batch_size=8)\\n")
    >>> [f.code for f in lint_source(src)]
    []
"""

from __future__ import annotations

import ast

from torchdoctor.lint.visitor import RuleVisitor, dotted

#: the calls that split a dataset, its first argument the dataset split
_SPLITS = frozenset({"random_split", "Subset"})


def _is_split(rules: RuleVisitor, call: ast.Call) -> bool:
    """``random_split(...)`` / ``Subset(...)`` of torch.utils.data (or unresolved: a bare
    name imported from elsewhere)."""
    names = rules.callee(call) or {dotted(call.func) or ""}
    return any(n.rsplit(".", 1)[-1] in _SPLITS and (n.startswith("torch.") or "." not in n)
               for n in names)  # fmt: skip


def split_into(rules: RuleVisitor, scope: ast.AST, name: str) -> list[ast.expr]:
    """The split calls ``scope`` unpacks into ``name`` (``train, val = random_split(data,
    [n, m])``: ``name`` is ``train`` or ``val``).

    Example:
        >>> class Rules:
        ...     def callee(self, call):
        ...         return {"torch.utils.data." + call.func.id}
        >>> tree = ast.parse("train, val = random_split(data, [8, 2])")
        >>> [ast.unparse(v) for v in split_into(Rules(), tree, "val")]
        ['random_split(data, [8, 2])']
    """
    return [node.value for node in ast.walk(scope) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and _is_split(rules, node.value)
            and any(isinstance(t, ast.Tuple | ast.List) and any(
                isinstance(e, ast.Name) and e.id == name for e in t.elts) for t in node.targets)]  # fmt: skip


def unsplit(rules: RuleVisitor, scope: ast.AST, values: list[ast.expr], depth: int = 0) -> list[ast.expr]:
    """``values`` with every split call replaced by what the dataset it splits was assigned
    in ``scope`` (a split of a split too); a split of a name ``scope`` does not assign (a
    parameter) stays as it is.

    Example:
        >>> class Rules:
        ...     def callee(self, call):
        ...         return {"torch.utils.data." + call.func.id}
        ...     def assigned_values(self, scope, name):
        ...         return [v.value for v in scope.body if v.targets[0].id == name]
        >>> tree = ast.parse("data = TensorDataset(x, y); head = Subset(data, idx)")
        >>> [ast.unparse(v) for v in unsplit(Rules(), tree, [tree.body[1].value])]
        ['TensorDataset(x, y)']
    """
    out: list[ast.expr] = []
    for value in values:
        if isinstance(value, ast.Call) and value.args and depth < 4 and _is_split(rules, value):
            source = value.args[0]
            inner = [source] if not isinstance(source, ast.Name) else (
                rules.assigned_values(scope, source.id) or split_into(rules, scope, source.id))
            if inner:
                out += unsplit(rules, scope, inner, depth + 1)
                continue
        out.append(value)
    return out

"""Whether the callers of a module use what its ``forward`` returns: a value returned in a tuple
that every call in the file unpacks into ``_`` (``ctx, _ = self.attn(h, enc)``) is computed for
nobody, so a rule may treat it as unused (TD507: attention weights returned next to the context
do not rule out the fused kernel when no caller reads them).
"""

from __future__ import annotations

import ast

from torchdoctor.lint.syntax import parent, same_file_callee
from torchdoctor.lint.visitor import dotted


def returns_only(call: ast.AST, test) -> bool:
    """``call`` runs a function of this file (``aux = balance_loss(probs, idx)``) whose every
    ``return`` gives a value that passes ``test`` (``return loss.float() / n``: a tensor).

    Example:
        >>> from torchdoctor.lint.syntax import link_parents
        >>> tree = ast.parse("def f(x):\\n    return x.float()\\ny = f(1)\\n")
        >>> _ = link_parents(tree)
        >>> call = tree.body[1].value
        >>> returns_only(call, lambda r: isinstance(r, ast.Call))
        True
    """
    helper = same_file_callee(call) if isinstance(call, ast.Call) else None
    returns = [r.value for r in ast.walk(helper) if isinstance(r, ast.Return)] if helper else []
    return bool(returns) and all(r is not None and test(r) for r in returns)


def returned_at(use: ast.AST) -> int | None:
    """The position of ``use`` in the tuple its function returns (through calls on it, such
    as ``weights.squeeze(1)``), or None when it is not returned so.

    Example:
        >>> from torchdoctor.lint.syntax import link_parents
        >>> tree = ast.parse("def f(a, w):\\n    return a, w.squeeze(1)\\n")
        >>> w = [n for n in link_parents(tree) if isinstance(n, ast.Name) and n.id == "w"][0]
        >>> returned_at(w)
        1
    """
    node, up = use, parent(use)
    while isinstance(up, ast.Attribute | ast.Call) and (
        up.func is node if isinstance(up, ast.Call) else up.value is node
    ):
        node, up = up, parent(up)
    if isinstance(up, ast.Tuple) and isinstance(parent(up), ast.Return):
        return next((k for k, e in enumerate(up.elts) if e is node), None)
    return None


def discarded_by_callers(tree: ast.Module, owner: ast.AST, position: int) -> bool:
    """Every call of an instance of the class ``owner`` made in ``tree`` (``self.attn =
    Owner(...)``, then ``ctx, _ = self.attn(...)``), or of the module-level function ``owner``
    (``x, _ = attention(q, k, v)``), at least one, unpacks element ``position`` of what it
    returns into ``_``.

    Example:
        >>> src = ("class Attn:\\n    pass\\nclass Dec:\\n    def __init__(self):\\n"
        ...        "        self.attn = Attn()\\n    def forward(self, h):\\n"
        ...        "        ctx, _ = self.attn(h)\\n        return ctx\\n")
        >>> tree = ast.parse(src)
        >>> discarded_by_callers(tree, tree.body[0], 1)
        True
        >>> discarded_by_callers(tree, tree.body[0], 0)
        False
    """
    instances = {
        dotted(target)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
        and dotted(node.value.func) in (owner.name, f"self.{owner.name}")
        for target in node.targets
    } - {None} if isinstance(owner, ast.ClassDef) else {owner.name}  # fmt: skip
    # (a module-level function is called by its name: the Annotated Transformer's attention())
    targets = {
        id(node.value): node.targets[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and len(node.targets) == 1
    }
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and dotted(n.func) in instances]
    for call in calls:
        target = targets.get(id(call))
        element = (target.elts[position] if isinstance(target, ast.Tuple)
                   and position < len(target.elts) else None)  # fmt: skip
        if not (isinstance(element, ast.Name) and element.id == "_"):
            return False
    return bool(calls)

"""A DataParallel wrapper made only to load a checkpoint and unwrapped before it runs (TD701
reads it): ``model = DataParallel(RAFT(args)); model.load_state_dict(...); model = model.module``.

Example:
    >>> from torchdoctor.lint import lint_source
    >>> src = ("import torch\\nmodel = torch.nn.DataParallel(net)\\n"
    ...        "model.load_state_dict(torch.load('c.pt'))\\nmodel = model.module\\n")
    >>> [f.code for f in lint_source(src)]
    []
"""

from __future__ import annotations

import ast

#: what a wrapper made only to load a checkpoint is used for: its loads, moves and `.module`
_UNWRAPPING = frozenset({"load_state_dict", "cuda", "to", "cpu", "eval", "train"})


def only_unwrapped(rules, call: ast.Call) -> bool:
    """``model = DataParallel(RAFT(args))`` whose every later use of the name, until it is
    bound again, is a load or a move as a statement (``model.load_state_dict(...)``,
    ``model.cuda()``) or its ``.module`` (``model = model.module``, ``validate(model.module)``):
    a wrapper made to load a checkpoint saved with ``module.`` keys, never run (RAFT's
    demo.py and evaluate.py). Anything else (a call, a return, an argument) keeps TD701."""
    bind = rules.parent(call)
    if not (isinstance(bind, ast.Assign) and len(bind.targets) == 1
            and isinstance(bind.targets[0], ast.Name)):  # fmt: skip
        return False
    name, scope = bind.targets[0].id, rules.enclosing_scope(call)
    later = [n for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id == name
             and n.lineno > bind.lineno]  # fmt: skip
    end = min((n.lineno for n in later if isinstance(n.ctx, ast.Store)), default=None)
    uses = [n for n in later if isinstance(n.ctx, ast.Load) and (end is None or n.lineno <= end)]
    unwrapped = False
    for use in uses:
        attr = rules.parent(use)
        if not (isinstance(attr, ast.Attribute) and attr.value is use):
            return False
        if attr.attr == "module":
            unwrapped = True
            continue
        method = rules.parent(attr)
        if not (attr.attr in _UNWRAPPING and isinstance(method, ast.Call) and method.func is attr
                and isinstance(rules.parent(method), ast.Expr)):  # fmt: skip
            return False
    return unwrapped

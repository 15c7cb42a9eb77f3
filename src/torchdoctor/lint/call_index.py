"""The calls of a file by the name they call (``f(...)`` and ``obj.f(...)`` under ``"f"``), indexed
once per file and rule family: rules asking "what do the file's calls of this function pass"
walked the whole file each time (0.17 s a question in torch's testing package).

Example:
    >>> import ast
    >>> from types import SimpleNamespace
    >>> visitor = SimpleNamespace(context=SimpleNamespace(tree=ast.parse("f(1)\\nx.f(2)\\ng(3)")))
    >>> [ast.unparse(c) for c in calls_named(visitor, "f")]
    ['f(1)', 'x.f(2)']
"""

from __future__ import annotations

import ast
from typing import Any


def calls_named(visitor: Any, name: str) -> list[ast.Call]:
    """The calls in ``visitor``'s file whose function is ``name`` or ``<anything>.name``, in
    the order of a walk of the file (kept on the visitor: one per file).

    Example:
        >>> import types
        >>> visitor = types.SimpleNamespace(context=types.SimpleNamespace(
        ...     tree=ast.parse("f(1)\\nm.f(2)\\ng(3)")))
        >>> [ast.unparse(c) for c in calls_named(visitor, "f")]
        ['f(1)', 'm.f(2)']
    """
    index = visitor.__dict__.get("_calls_by_name")
    if index is None:
        index = visitor.__dict__["_calls_by_name"] = {}
        tree = visitor.context.tree
        for call in ast.walk(tree) if tree is not None else ():
            if isinstance(call, ast.Call):
                called = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
                if called:
                    index.setdefault(called, []).append(call)
    return index.get(name, [])

"""Lint findings inside a module class the profiled run never called.

A script can define models it does not build in this run: karpathy/makemore defines a
Transformer, a BoW, an RNN and more, and ``--type rnn`` builds the RNN alone. A finding in the
Transformer's attention is no suspect of this run's time, however much of the step runs
outside every module. The module tree names the classes that ran (``type``); the finding's
class is read from its file (the source on this machine, parsed once per file).

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "m.py")
    >>> _ = open(path, "w").write("import torch\\nclass Gelu(torch.nn.Module):\\n    def forward(self, x):\\n        return x\\n")
    >>> module_never_called({"tree": {"children": [{"kind": "module", "type": "RNN"}]}}, path, 4)
    'Gelu'
    >>> module_never_called({"tree": {"children": [{"kind": "module", "type": "Gelu"}]}}, path, 4) is None
    True
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.session_read import walk


@functools.lru_cache(maxsize=64)
def _module_classes(path: str, mtime: float) -> tuple[tuple[str, int, int], ...]:
    """``(class name, first line, last line)`` of each class in the file deriving from a
    ``...Module`` base (``nn.Module``, ``LightningModule``); ``mtime`` keys the cache."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return ()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            (base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
             ).endswith("Module") for base in node.bases
        ):  # fmt: skip
            found.append((node.name, node.lineno, int(node.end_lineno or node.lineno)))
    return tuple(found)


def module_never_called(session: Mapping[str, Any], path: Any, line: Any) -> str | None:
    """The name of the innermost module class holding ``path:line`` when the profiled tree has
    modules but none of that class ran, else None (the file unreadable, the line in no such
    class, or the class called)."""
    if not isinstance(line, int) or not path:
        return None
    ran = {str(n.get("type")) for n, _ in walk(session.get("tree")) if n.get("kind") == "module"}
    if not ran:
        return None
    try:
        classes = _module_classes(str(path), os.path.getmtime(str(path)))
    except OSError:
        return None
    holding = [c for c in classes if c[1] <= line <= c[2]]
    if not holding:
        return None
    name = min(holding, key=lambda c: c[2] - c[1])[0]
    return None if name in ran else name

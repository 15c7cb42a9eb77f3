"""Pinned loaders that cross files: a script builds ``DataLoader(..., pin_memory=True)`` and
hands it to a training function it imports from another module of the project (HRNet's
``train.py`` builds the loaders, ``function.py``'s ``train(config, train_loader, ...)``
iterates them). :meth:`torchdoctor.lint.project.Project.pinned_loader_passed` asks this of
every file; TD404 then checks the function's loops over that parameter.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.syntax import dotted


def pinned_loader_call(node: ast.AST | None) -> bool:
    """A ``DataLoader(..., pin_memory=True)`` call (no ``**kwargs`` hiding the options).

    Example:
        >>> pinned_loader_call(ast.parse("DataLoader(ds, pin_memory=True)", mode="eval").body)
        True
        >>> pinned_loader_call(ast.parse("DataLoader(ds, **opts)", mode="eval").body)
        False
    """
    if not (isinstance(node, ast.Call) and (dotted(node.func) or "").endswith("DataLoader")):
        return False
    if any(k.arg is None for k in node.keywords):
        return False
    pin = next((k.value for k in node.keywords if k.arg == "pin_memory"), None)
    return isinstance(pin, ast.Constant) and pin.value is True


def pinned_loader_passed(
    text: str, tree: ast.Module | None, module: str, function: str,
    position: int | None, keyword: str | None,
) -> int | None:
    """The line of the pinned ``DataLoader(...)`` that the source ``text`` passes to
    ``function`` of ``module`` (imported: ``from engine import train`` then ``train(cfg,
    loader)``, or ``engine.train(cfg, loader)``) as the argument at ``position`` or by
    ``keyword``: the argument is the call itself, or a name every assignment of which in the
    file is one; None otherwise.

    Example:
        >>> src = ("from engine import fit\\nfrom torch.utils.data import DataLoader\\n"
        ...        "dl = DataLoader(ds, pin_memory=True)\\nfit(model, dl)\\n")
        >>> pinned_loader_passed(src, ast.parse(src), "engine", "fit", 1, "loader")
        3
        >>> pinned_loader_passed(src, ast.parse(src), "engine", "fit", 0, "model") is None
        True
    """
    name, where = re.escape(function), re.escape(module)
    imported = re.search(rf"(?m)^\s*from\s+[\w.]*\b{where}\s+import\b[^\n]*\b{name}\b", text)
    qualified = re.search(rf"\b{where}\.{name}\s*\(", text)
    if tree is None or not (imported or qualified) or "pin_memory" not in text:
        return None
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        callee = dotted(call.func) or ""
        if not ((imported and callee == function)
                or (qualified and callee.endswith(f"{module}.{function}"))):  # fmt: skip
            continue
        given = [k.value for k in call.keywords if keyword is not None and k.arg == keyword]
        if not given and position is not None and position < len(call.args):
            if not any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
                given = [call.args[position]]
        for value in given:
            line = _pinned_value(tree, value)
            if line is not None:
                return line
    return None


def _pinned_value(tree: ast.Module, value: ast.AST) -> int | None:
    """The line of the pinned DataLoader ``value`` is, or that every assignment of the name
    ``value`` in ``tree`` binds."""
    if pinned_loader_call(value):
        return value.lineno  # type: ignore[attr-defined]
    if not isinstance(value, ast.Name):
        return None
    made = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == value.id for t in n.targets)]  # fmt: skip
    if made and all(pinned_loader_call(m) for m in made):
        return made[0].lineno
    return None

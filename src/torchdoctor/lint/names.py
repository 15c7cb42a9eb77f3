"""Qualified names from a module's imports: ``T.linalg.inv`` -> ``torch.linalg.inv``.

One pass over the module's import statements (function-level imports included) builds a table
from bound name to the qualified names it may denote; a name the file never binds and that is
a builtin resolves to ``builtins.<name>``. Names the file binds otherwise (a ``def inv``, an
assignment, a parameter) resolve to nothing, so a local ``inv`` is never ``torch.linalg.inv``.
Relative imports keep their leading dots (``.module.Module``), as LibCST's provider does.
Under a star import (``from utils import *``), a package the file imports only a submodule of
(``import torch.nn as nn`` binds ``nn``, not ``torch``) and uses by its own name resolves to
itself: the star import brought it (locuslab/TCN's ``with torch.no_grad():``).
"""

from __future__ import annotations

import ast
import builtins

_BUILTINS = frozenset(dir(builtins))


class ImportTable:
    """Resolve Name/Attribute chains of one module to qualified names.

    Example:
        >>> import ast
        >>> table = ImportTable(ast.parse("import torch as T\\nfrom torch.linalg import inv"))
        >>> sorted(table.qualify(ast.parse("T.nn.functional.relu", mode="eval").body))
        ['torch.nn.functional.relu']
        >>> sorted(table.qualify(ast.parse("print", mode="eval").body))
        ['builtins.print']
    """

    def __init__(self, tree: ast.AST, nodes: list[ast.AST] | None = None) -> None:
        self.imports: dict[str, set[str]] = {}
        self.bound: set[str] = set()
        star, packages = False, set()
        for node in nodes if nodes is not None else ast.walk(tree):
            kind = type(node)
            if kind is ast.Import:
                for alias in node.names:
                    if alias.asname:
                        self._add(alias.asname, alias.name)
                    else:
                        head = alias.name.split(".", 1)[0]
                        self._add(head, head)
                    packages.add(alias.name.split(".", 1)[0])
            elif kind is ast.ImportFrom:
                base = "." * (node.level or 0) + (node.module or "")
                if not node.level and node.module:
                    packages.add(node.module.split(".", 1)[0])
                for alias in node.names:
                    if alias.name == "*":
                        star = True
                        continue
                    sep = "" if base.endswith(".") or not base else "."
                    self._add(alias.asname or alias.name, f"{base}{sep}{alias.name}")
            elif kind is ast.Name:
                if not isinstance(node.ctx, ast.Load):
                    self.bound.add(node.id)
            elif kind in (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef):
                self.bound.add(node.name)
            elif kind is ast.arg:
                self.bound.add(node.arg)
            elif kind is ast.ExceptHandler and node.name:
                self.bound.add(node.name)
        self._cache: dict[str, frozenset[str]] = {}
        if star:  # (a package used by its name, not bound here: the star import's)
            for head in packages - self.imports.keys() - self.bound:
                self._add(head, head)

    def _add(self, name: str, qualified: str) -> None:
        self.imports.setdefault(name, set()).add(qualified)

    def resolve(self, name: str) -> frozenset[str]:
        """Qualified names of a dotted name as written (``'F.relu'``)."""
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        head, dot, rest = name.partition(".")
        found = self.imports.get(head)
        if found:
            out = frozenset(f"{q}{dot}{rest}" for q in found)
        elif head in _BUILTINS and head not in self.bound:
            out = frozenset({f"builtins.{name}"})
        else:
            out = frozenset()
        self._cache[name] = out
        return out

    def qualify(self, expr: ast.AST) -> set[str]:
        """Qualified names an expression (a Name/Attribute chain) may denote; empty otherwise."""
        parts = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return set()
        parts.append(expr.id)
        return set(self.resolve(".".join(reversed(parts))))

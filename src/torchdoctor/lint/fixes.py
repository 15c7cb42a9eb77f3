"""Apply the fixes that rules recorded when they detected (LibCST, format-preserving).

A rule plans its fix on the :mod:`ast` tree as it detects the problem and records a
:class:`~torchdoctor.lint.visitor.Fix` beside its finding (TorchFix style: detection, fix and
docs of a rule live in its own module). This module only applies them: it parses a file with
LibCST when, and only when, it holds a fixable finding, finds each fix's node by position and
calls the fix's ``rewrite``. It imports no rule module.

* ``kind == "call"``: ``rewrite(original_call, tools) -> cst.BaseExpression | None``
* ``kind == "block"``: ``rewrite(statements, index, tools) -> (first_index, new_statements) |
  None``: replaces ``statements[first_index:index + 1]``.

``tools`` (:class:`FixTools`) lets a rewrite add or remove imports.
"""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst
from libcst.codemod import CodemodContext, VisitorBasedCodemodCommand
from libcst.codemod.visitors import AddImportsVisitor, RemoveImportsVisitor
from libcst.metadata import PositionProvider

from torchdoctor.lint.visitor import Fix


class FixTools:
    """What a rewrite may do besides returning new nodes: manage imports.

    Example:
        >>> FixTools(CodemodContext()).add_import("torch")
    """

    def __init__(self, context: CodemodContext) -> None:
        self.context = context

    def add_import(self, module: str, name: str | None = None) -> None:
        """Ensure ``import module`` (or ``from module import name``) exists."""
        AddImportsVisitor.add_needed_import(self.context, module, name)

    def remove_unused_import(self, module: str, name: str | None = None) -> None:
        """Remove ``from module import name`` when nothing uses it any more."""
        RemoveImportsVisitor.remove_unused_import(self.context, module, name)


class _FixCommand(VisitorBasedCodemodCommand):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, context: CodemodContext, fixes: Sequence[Fix]) -> None:
        super().__init__(context)
        self.tools = FixTools(context)
        self.calls = {
            (f.line, f.column, f.end_line, f.end_column): f for f in fixes if f.kind == "call"
        }
        self.blocks = {(f.line, f.column): f for f in fixes if f.kind == "block"}

    def _key(self, node: cst.CSTNode) -> tuple[int, int]:
        pos = self.get_metadata(PositionProvider, node)
        return pos.start.line, pos.start.column + 1

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        if not self.calls:
            return updated
        pos = self.get_metadata(PositionProvider, original)
        key = (pos.start.line, pos.start.column + 1, pos.end.line, pos.end.column + 1)
        fix = self.calls.get(key)
        if fix is None:
            return updated
        new = fix.rewrite(updated, self.tools)
        if new is None:
            return updated
        if isinstance(new, cst.Call) or hasattr(new, "lpar"):
            new = new.with_changes(lpar=updated.lpar, rpar=updated.rpar)
        return new

    def _fix_block(self, original_body, updated_body) -> list[cst.CSTNode] | None:
        if not self.blocks:
            return None
        out: list[cst.CSTNode] = list(updated_body)
        changed = False
        for i in range(len(original_body) - 1, -1, -1):
            stmt = original_body[i]
            if isinstance(stmt, cst.SimpleStatementLine):
                continue
            fix = self.blocks.get(self._key(stmt))
            if fix is None:
                continue
            plan = fix.rewrite(out, i, self.tools)
            if plan is None:
                continue
            first, statements = plan
            out[first : i + 1] = statements
            changed = True
        return out if changed else None

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock):
        body = self._fix_block(original.body, updated.body)
        return updated if body is None else updated.with_changes(body=body)

    def leave_Module(self, original: cst.Module, updated: cst.Module) -> cst.Module:
        body = self._fix_block(original.body, updated.body)
        return updated if body is None else updated.with_changes(body=body)


def apply_fixes(source: str | bytes, fixes: Sequence[Fix]) -> bytes:
    """``source`` with ``fixes`` applied (the same bytes when there is none).

    Example:
        >>> apply_fixes(b"x = 1\\n", [])
        b'x = 1\\n'
    """
    raw = source.encode("utf-8") if isinstance(source, str) else source
    if not fixes:
        return raw
    module = cst.parse_module(raw)
    return _FixCommand(CodemodContext(), fixes).transform_module(module).bytes

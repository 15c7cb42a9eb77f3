"""Whether a measured attention is what fused SDPA computes: the statements that ran between
its scores and the product with the values, read from the source.

``F.scaled_dot_product_attention`` computes ``softmax(q @ k^T * scale + mask) @ v`` (dropout on
the weights). Hand-written attention often does more, which the kernel cannot: x-transformers'
``cog_signed`` takes ``abs()`` of the scores and multiplies the weights by their signs after
the softmax; talking heads add a term computed from the scores; a soft clamp ``tanh``s them;
attention sinks concatenate a column and slice it off again. Telling such attention to use
SDPA is wrong advice. The hot lines say which lines of a function ran (an ``if self.cog_signed:``
branch that did not run has no torch calls); this module reads each function that ran a
softmax (``collect/source_lines.parsed``) and names the statements that ran and change the
scores or the weights beyond a scale, an additive bias or mask, a cast, a dropout.

Example:
    >>> import tempfile
    >>> src = chr(10).join([
    ...     "def attend(q, k, v, mask):",
    ...     "    sim = q @ k.transpose(-1, -2) * 0.125",
    ...     "    sim = sim.masked_fill(~mask, -1e9)",
    ...     "    sign = sim.sign()",
    ...     "    sim = sim.abs()",
    ...     "    attn = sim.softmax(dim=-1)",
    ...     "    attn = attn * sign",
    ...     "    return attn @ v", ""])
    >>> with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    ...     _ = f.write(src)
    >>> rows = [{"file": f.name, "line": n, "function_line": 1, "owner": "attn",
    ...          "top_ops": [{"op": "Tensor.softmax" if n == 6 else "Tensor.mul"}]}
    ...         for n in range(2, 9)]
    >>> [(b["location"].split(":")[1], b["what"]) for b in attention_forms(rows)[0]["blockers"]]
    [('5', '`abs()` of the scores'), ('7', 'the weights multiplied after the softmax')]
"""

from __future__ import annotations

import ast
import linecache
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torchdoctor.collect.source_lines import parsed, statement_start

#: methods that keep the scores what SDPA computes (a mask, a cast, a copy, a scale)
_SCORE_METHODS = frozenset({
    "masked_fill", "masked_fill_", "float", "half", "bfloat16", "to", "type", "type_as",
    "contiguous", "clone", "mul", "mul_", "div", "div_", "add", "add_", "sub", "sub_",
})  # fmt: skip
#: ... and the weights (a mask zeroing fully masked rows, a cast, a copy)
_WEIGHT_METHODS = frozenset({
    "masked_fill", "masked_fill_", "float", "half", "bfloat16", "to", "type", "type_as",
    "contiguous", "clone",
})  # fmt: skip
_PRODUCTS = frozenset({"matmul", "bmm", "einsum", "mm"})
_ARITHMETIC = {ast.Mult: "multiplied", ast.Div: "divided", ast.Add: "summed with a term",
               ast.Sub: "summed with a term", ast.Pow: "raised to a power"}  # fmt: skip


def attention_forms(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each function whose measured lines ran a softmax: its softmax line, the owners
    (module paths) that ran it and the statements that ran and make it other than SDPA's
    attention (``blockers``: location, code, what); functions without any are left out.

    ``rows``: hot-line rows (``file``, ``line``, ``function_line``, ``owner``, ``top_ops``).
    """
    functions: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        functions.setdefault((str(row.get("file")), int(row.get("function_line") or 0)),
                             []).append(row)  # fmt: skip
    forms = []
    for (file, first_line), members in functions.items():
        softmax_lines = sorted({int(r["line"]) for r in members if _runs_softmax(r)})
        if not softmax_lines:
            continue
        function = _function_at(file, first_line)
        if function is None:
            continue
        ran = {statement_start(file, int(r["line"])) for r in members}
        blockers: dict[int, str] = {}
        for line in softmax_lines:
            blockers.update(_blockers(function, statement_start(file, line), ran))
        if blockers:
            forms.append({
                "function": f"{os.path.basename(file)}:{first_line}",
                "softmax": [f"{os.path.basename(file)}:{n}" for n in softmax_lines],
                "owners": sorted({str(r.get("owner") or "") for r in members}),
                "blockers": [
                    {"location": f"{os.path.basename(file)}:{n}", "line": n,
                     "code": linecache.getline(file, n).strip(), "what": what}
                    for n, what in sorted(blockers.items())
                ],
            })  # fmt: skip
    return forms


def _runs_softmax(row: Mapping[str, Any]) -> bool:
    return any(
        str(op.get("op")).rsplit(".", 1)[-1] == "softmax" for op in row.get("top_ops") or ()
    )


def _function_at(file: str, first_line: int) -> ast.AST | None:
    """The function whose code starts at ``first_line`` (its ``def`` or first decorator)."""
    tree = parsed(file)
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            starts = [node.lineno, *(d.lineno for d in node.decorator_list)]
            if first_line in starts:
                return node
    return None


def _statements(function: ast.AST) -> list[ast.stmt]:
    """The simple statements of ``function`` (not of functions nested in it), in line order."""
    found: list[ast.stmt] = []

    def visit(body: Sequence[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            nested = [getattr(stmt, f, None) for f in ("body", "orelse", "finalbody")]
            handlers = getattr(stmt, "handlers", None) or ()
            if any(isinstance(b, list) and b for b in nested) or handlers:
                for block in nested:
                    if isinstance(block, list):
                        visit(block)
                for handler in handlers:
                    visit(handler.body)
            else:
                found.append(stmt)

    visit(function.body)  # type: ignore[attr-defined]
    return sorted(found, key=lambda s: s.lineno)


def _target(stmt: ast.stmt) -> tuple[str | None, ast.AST | None]:
    """The name a statement assigns (plain, augmented or an in-place method call on it) and
    the expression it assigns (for ``x.op_(...)``: the call)."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        if isinstance(stmt.targets[0], ast.Name):
            return stmt.targets[0].id, stmt.value
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
        return stmt.target.id, stmt.value
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
        return stmt.target.id, ast.BinOp(ast.Name(stmt.target.id, ast.Load()), stmt.op,
                                         stmt.value)  # fmt: skip
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        func = stmt.value.func
        if isinstance(func, ast.Attribute) and func.attr.endswith("_"):
            if isinstance(func.value, ast.Name):
                return func.value.id, stmt.value
    return None, None


def _names(expr: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _products(expr: ast.AST) -> list[list[ast.AST]]:
    """The operands of each matrix product in ``expr`` (``@``, matmul, bmm, einsum, mm)."""
    found: list[list[ast.AST]] = []
    for node in ast.walk(expr):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            found.append([node.left, node.right])
        elif isinstance(node, ast.Call) and _callee(node) in _PRODUCTS:
            found.append(list(node.args))
    return found


def _is_product(expr: ast.AST, name: str) -> bool:
    """``expr`` multiplies ``name`` as a matrix."""
    return any(name in _names(o) for operands in _products(expr) for o in operands)


def _has_product(expr: ast.AST) -> bool:
    return bool(_products(expr))


def _softmax_input(value: ast.AST, assigned: set[str]) -> str | None:
    """The scores name a softmax statement reads: the first name it passes to a call (or
    calls a method on) that the function assigned before."""
    for node in ast.walk(value):
        if isinstance(node, ast.Call):
            func = node.func
            candidates = [*node.args]
            if isinstance(func, ast.Attribute):
                candidates.insert(0, func.value)
            for arg in candidates:
                if isinstance(arg, ast.Name) and arg.id in assigned:
                    return arg.id
    return None


def _blockers(function: ast.AST, softmax_line: int, ran: set[int]) -> dict[int, str]:
    statements = _statements(function)
    at = next((s for s in statements if s.lineno == softmax_line), None)
    weights, value = _target(at) if at is not None else (None, None)
    if weights is None or value is None:
        return {}
    before = [s for s in statements if s.lineno < softmax_line]
    scores = _softmax_input(value, {name for s in before if (name := _target(s)[0])})
    found: dict[int, str] = {}
    if scores is not None:
        for stmt in before:
            name, expr = _target(stmt)
            if name != scores or expr is None:
                continue
            if scores not in _names(expr) or _has_product(expr):  # made (anew) from q and k:
                found.clear()  # what came before was another value
            elif stmt.lineno in ran:
                what = _score_change(expr, scores)
                if what is not None:
                    found[stmt.lineno] = what
    for stmt in (s for s in statements if s.lineno > softmax_line):
        name, expr = _target(stmt)
        if expr is None:
            continue
        if _is_product(expr, weights):
            break  # the product with the values: what follows is not the weights' business
        if name == weights and stmt.lineno in ran:
            what = _weight_change(expr, weights)
            if what is not None:
                found[stmt.lineno] = what
    return found


def _score_change(expr: ast.AST, scores: str) -> str | None:
    """What ``scores = expr`` (an expression of the scores) does to them that SDPA cannot
    (None: a scale, a bias or a mask added, a mask filled in, a cast)."""
    if isinstance(expr, ast.Name):
        return None
    if isinstance(expr, ast.BinOp) and type(expr.op) in _ARITHMETIC:
        left, right = scores in _names(expr.left), scores in _names(expr.right)
        if left and right:
            return "a term computed from the scores combined with them"
        inner = expr.left if left else expr.right
        return _score_change(inner, scores)
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        return _score_change(expr.operand, scores)
    if isinstance(expr, ast.Call):
        name = _callee(expr)
        func = expr.func
        on_scores = isinstance(func, ast.Attribute) and scores in _names(func.value)
        if on_scores and name in _SCORE_METHODS:
            if any(scores in _names(a) for a in [*expr.args, *(k.value for k in expr.keywords)]):
                return "a term computed from the scores combined with them"
            return _score_change(func.value, scores)  # type: ignore[attr-defined]
        if name == "where" and len(expr.args) == 3 and scores not in _names(expr.args[0]):
            return None  # torch.where(mask, scores, fill)
        return f"`{name}()` of the scores"
    if isinstance(expr, ast.Subscript):
        return "the scores sliced"
    return "the scores changed"


def _weight_change(expr: ast.AST, weights: str) -> str | None:
    """What ``weights = expr`` after the softmax does that SDPA cannot (None: a dropout, a
    cast, a mask zeroing rows)."""
    if isinstance(expr, ast.Name):
        return None
    if isinstance(expr, ast.BinOp):
        other = expr.right if weights in _names(expr.left) else expr.left
        if isinstance(other, ast.Constant):
            return None  # (a constant factor: the values could carry it)
        return f"the weights {_ARITHMETIC.get(type(expr.op), 'changed')} after the softmax"
    if isinstance(expr, ast.Call):
        name = _callee(expr)
        func = expr.func
        if "drop" in name.lower():
            return None
        if isinstance(func, ast.Attribute) and weights in _names(func.value):
            if name in _WEIGHT_METHODS:
                return _weight_change(func.value, weights)
        return f"`{name}()` of the weights"
    if isinstance(expr, ast.Subscript):
        return "the weights sliced after the softmax (an attention sink)"
    return "the weights changed after the softmax"

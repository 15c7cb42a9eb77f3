"""TD302's autofix: ``u = torch.unique(y); r = torch.zeros_like(y); for i, v in enumerate(u):
r[y == v] = i`` becomes ``u, r = torch.unique(y, return_inverse=True)`` (and a dtype cast)."""

from __future__ import annotations

import ast

from torchdoctor.lint.loop_shapes import remap_loop_parts
from torchdoctor.lint.visitor import dotted, statement_list


def plan_remap_fix(rules, loop: ast.For) -> tuple[str, str | None] | None:
    """The statements replacing ``u = torch.unique(y); r = torch.zeros_like(y); <loop>``
    (``u, r = torch.unique(y, return_inverse=True)`` and a dtype cast unless ``r`` was
    int64), or None when the code around ``loop`` is not exactly that idiom; ``rules``: the
    visitor that found it.

    Example:
        >>> from torchdoctor.lint import fix_source
        >>> src = ("import torch\\ndef f(y):\\n    u = torch.unique(y)\\n"
        ...        "    r = torch.zeros_like(y)\\n    for i, v in enumerate(u):\\n"
        ...        "        r[y == v] = i\\n    return r\\n")
        >>> print(fix_source(src).splitlines()[2])
            u, r = torch.unique(y, return_inverse=True)
    """
    body = statement_list(rules.parent(loop), loop)
    parts = remap_loop_parts(loop, rules.context.lines)
    if body is None or parts is None:
        return None
    index = next(i for i, stmt in enumerate(body) if stmt is loop)
    if index < 2:
        return None
    idx, val, uniq, out, labels = parts
    first, second = _single_assign(body[index - 2]), _single_assign(body[index - 1])
    if first is None or second is None or first[0] != uniq or second[0] != out:
        return None
    if not _is_dotted(labels) or labels in {uniq, out} or uniq == out:
        return None
    unique, zeros = first[1], second[1]
    if not isinstance(zeros, ast.Call) or "torch.zeros_like" not in rules.callee(zeros):
        return None
    int64 = False  # zeros_like(labels, dtype=torch.long): the inverse indices need no cast
    if len(zeros.args) == 1 and len(zeros.keywords) == 1:
        extra = zeros.keywords[0]
        if extra.arg != "dtype":
            return None
        if not rules.qualified_names(extra.value) & {"torch.long", "torch.int64"}:
            return None
        int64 = True
    elif zeros.keywords or len(zeros.args) != 1:
        return None
    if isinstance(zeros.args[0], ast.Starred) or rules.code_of(zeros.args[0]) != labels:
        return None
    if not isinstance(unique, ast.Call):
        return None
    n_args = len(unique.args) + len(unique.keywords)
    if (
        isinstance(unique.func, ast.Attribute)
        and unique.func.attr == "unique"
        and rules.code_of(unique.func.value) == labels
        and n_args == 0
    ):
        new_unique = f"{labels}.unique(return_inverse=True)"
    elif (
        "torch.unique" in rules.callee(unique)
        and n_args == 1
        and unique.args
        and rules.code_of(unique.args[0]) == labels
    ):
        new_unique = f"{rules.code_of(unique.func)}({labels}, return_inverse=True)"
    else:
        return None
    lines = rules.context.lines
    if any("#" in lines[i] for i in range(body[index - 2].end_lineno, loop.end_lineno)):
        return None  # a comment would be lost
    for later in body[index + 1 :]:  # the loop variables must not be read after the loop
        if any(isinstance(n, ast.Name) and n.id in {idx, val} for n in ast.walk(later)):
            return None
    head = f"{uniq}, {out} = {new_unique}\n"
    return head, None if int64 else f"{out} = {out}.to({labels}.dtype)\n"

def _single_assign(stmt: ast.AST) -> tuple[str, ast.AST] | None:
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
        return None
    name = dotted(stmt.targets[0])
    return None if name is None else (name, stmt.value)


def _is_dotted(text: str) -> bool:
    try:
        expr = ast.parse(text, mode="eval").body
    except SyntaxError:
        return False
    return dotted(expr) is not None


def remap_rewrite(head: str, cast: str | None):
    """The LibCST rewrite of the TD302 idiom planned by :func:`plan_remap_fix` (applied by
    ``torchdoctor lint --fix``, as in :func:`plan_remap_fix`'s example).

    Example:
        >>> import libcst as cst
        >>> body = cst.parse_module("u = torch.unique(y)\\nr = torch.zeros_like(y)\\n"
        ...                         "for i, v in enumerate(u):\\n    r[y == v] = i\\n").body
        >>> start, new = remap_rewrite("u, r = torch.unique(y, return_inverse=True)\\n", None)(
        ...     body, 2, None)
        >>> start, [cst.Module(body=[s]).code.strip() for s in new]
        (0, ['u, r = torch.unique(y, return_inverse=True)'])
    """

    def rewrite(statements, index, tools):
        import libcst as cst

        if index < 2:
            return None
        first, second, loop = statements[index - 2 : index + 1]
        new = cst.parse_statement(head)
        leading = [*first.leading_lines, *second.leading_lines, *loop.leading_lines]
        out = [new.with_changes(leading_lines=leading)]
        if cast is not None:
            out.append(cst.parse_statement(cast))
        return index - 2, out

    return rewrite

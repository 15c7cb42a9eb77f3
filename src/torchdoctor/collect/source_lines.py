"""Source files as the collectors read them: a file's syntax tree, parsed once
(:func:`parsed`; the hot lines' loops use it too), and the text a sync record shows: its
statement, readable on one line.

A host sync happens at one line of a statement that may span several (``if (`` ... ``):``,
a ``print(`` of many values). Which line the interpreter reports depends on the Python version:
3.11 gives a multi-line ``if`` test the ``if (`` line, 3.12 the line of the sub-expression that
converts the tensor (``and (torch.isnan(loss) or torch.isinf(loss))``). The text shown starts
at the statement's first line either way, so both versions name the same statement (and the
known library syncs, matched on its text, are found on both); a line that continues a
statement keeps its own text after the statement's beginning.

Example:
    >>> source_text("<nowhere>", 3, "item")
    '<item>'
"""

from __future__ import annotations

import ast
import functools
import linecache

#: characters of a record's source text
WIDTH = 80
#: of them, at least this many for the statement's beginning when the line continues it
HEAD = 40


def source_text(file: str, line: int, kind: str) -> str:
    """The statement at ``file:line`` (``<kind>`` when the source is unknown), at most WIDTH
    characters: a line that opens a bracket (``if (``) is joined with the next few lines until
    it closes; a line inside a statement begun on an earlier line is shown after that
    statement's beginning (``"if (self.nan_filter and … and (torch.isnan(loss) ..."``).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "lib.py")
        >>> with open(path, "w") as f:
        ...     _ = f.write("if (\\n    flag\\n    and torch.isnan(loss)\\n):\\n    pass\\n")
        >>> source_text(path, 1, "bool"), source_text(path, 3, "bool")
        ('if (flag and torch.isnan(loss)):', 'if (flag … and torch.isnan(loss)')
    """
    text = _joined(file, line)
    if not text:
        return f"<{kind}>"
    start = statement_start(file, line)
    if start < line:  # (a continuation line: the statement's beginning first)
        head = " ".join(
            linecache.getline(file, k).split("#", 1)[0].strip() for k in range(start, line)
        )
        head = head.replace("( ", "(").replace("[ ", "[").replace("{ ", "{").strip()
        room = max(HEAD, WIDTH - len(text) - 3)
        # (a head cut short ends in its own ellipsis: one mark for the gap)
        text = f"{head} … {text}" if len(head) <= room else f"{head[: room - 1]}… {text}"
    return text if len(text) <= WIDTH else text[: WIDTH - 3] + "..."


def _joined(file: str, line: int) -> str:
    text = linecache.getline(file, line).strip() if line and line > 0 else ""
    following = line
    while text and _open_brackets(text) > 0 and following < line + 4:
        following += 1
        more = linecache.getline(file, following).split("#", 1)[0].strip()
        if not more:
            break
        tight = text.endswith(("(", "[", "{")) or more.startswith((")", "]", "}"))
        text += ("" if tight else " ") + more
    return text


def _open_brackets(text: str) -> int:
    code = text.split("#", 1)[0]
    return sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")


def statement_start(file: str, line: int) -> int:
    """The first line of the statement ``line`` belongs to (a compound statement's header: its
    ``if (`` / ``for`` line); ``line`` itself when it starts one or the file cannot be parsed.

    Example:
        >>> statement_start("<nowhere>", 7)
        7
    """
    return _starts(file, len(linecache.getlines(file))).get(line, line)


def parsed(file: str) -> ast.Module | None:
    """The syntax tree of ``file`` as ``linecache`` reads it (None when it cannot be read or
    parsed); parsed once per file and length (a file rewritten while the run goes on is parsed
    again).

    Example:
        >>> parsed("<nowhere>") is None
        True
    """
    return _parsed(file, len(linecache.getlines(file)))


@functools.lru_cache(maxsize=64)
def _parsed(file: str, lines: int) -> ast.Module | None:
    if not lines:
        return None
    try:
        return ast.parse("".join(linecache.getlines(file)))
    except (SyntaxError, ValueError, RecursionError):
        return None


@functools.lru_cache(maxsize=64)
def _starts(file: str, _lines: int) -> dict[int, int]:
    """Continuation line -> its statement's first line, for one file."""
    tree = parsed(file)
    if tree is None:
        return {}
    starts: dict[int, int] = {}
    for node in ast.walk(tree):  # (outer statements first: inner ones overwrite their lines)
        if not isinstance(node, ast.stmt) or node.end_lineno is None:
            continue
        body = getattr(node, "body", None)
        end = node.end_lineno
        if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
            end = body[0].lineno - 1  # (a compound statement: its header only)
        for line in range(node.lineno + 1, end + 1):
            starts[line] = node.lineno
    return starts


def periodic_gate(file: str, line: int) -> str | None:
    """The test of the innermost ``if`` around ``file:line`` (within its function) that runs
    it every N steps (a ``%`` in the test: ``if i % 10 == 0``, ``if step % args.log_every ==
    0 and step``), as source text; None when no such ``if`` holds the line, its ``else`` does,
    or the file cannot be parsed. A test of which process runs (``if rank % 2 == 0``) is none.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "train.py")
        >>> with open(path, "w") as f:
        ...     _ = f.write("for i in range(9):\\n    step()\\n    if i % 10 == 0:\\n        save()\\n")
        >>> periodic_gate(path, 4), periodic_gate(path, 2)
        ('i % 10 == 0', None)
    """
    tree = parsed(file)
    if tree is None:
        return None
    node: ast.AST = tree
    gate = None
    while True:  # (down the statements holding the line, outermost first)
        inner = next((child for child in _bodies(node) if child.lineno <= line <= (
            child.end_lineno or child.lineno)), None)  # fmt: skip
        if inner is None:
            return gate
        if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            gate = None  # (a gate outside the function does not run it per step)
        elif isinstance(inner, ast.If) and _in_body(inner, line) and _steps_test(inner.test):
            gate = ast.unparse(inner.test)
        node = inner


def _bodies(node: ast.AST) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for name in ("body", "orelse", "finalbody", "handlers"):
        part = getattr(node, name, None)
        if isinstance(part, list):
            out.extend(s for s in part if isinstance(s, (ast.stmt, ast.excepthandler)))
    return out


def _in_body(node: ast.If, line: int) -> bool:
    return any(s.lineno <= line <= (s.end_lineno or s.lineno) for s in node.body)


def _steps_test(test: ast.AST) -> bool:
    if not any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) for n in ast.walk(test)):
        return False
    names = [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(test)
             if isinstance(n, (ast.Name, ast.Attribute))]  # fmt: skip
    return not any("rank" in name.lower() or "world" in name.lower() for name in names)


def hands_to_step(file: str, line: int) -> bool:
    """Whether the statement at ``file:line`` assigns a name that the innermost loop around it
    (within its function) passes to a ``.step(...)`` call: an action read on the host for an
    environment (``a = q(obs).argmax().item()`` ... ``env.step(a)``), whatever the names.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "rl.py")
        >>> with open(path, "w") as f:
        ...     _ = f.write("while True:\\n    a = pick()\\n    s = env.step(a)\\n    l = 1\\n")
        >>> hands_to_step(path, 2), hands_to_step(path, 4)
        (True, False)
    """
    tree = parsed(file)
    node: ast.AST | None = tree
    loop, stmt = None, None
    while node is not None:  # (down the statements holding the line, outermost first)
        inner = next((child for child in _bodies(node) if child.lineno <= line <= (
            child.end_lineno or child.lineno)), None)  # fmt: skip
        if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            loop = None
        elif isinstance(inner, (ast.For, ast.While)):
            loop = inner
        stmt, node = (inner or stmt), inner
    if loop is None or not isinstance(stmt, ast.Assign | ast.AnnAssign):
        return False
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return any(
        isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
        and call.func.attr == "step" and any(
            isinstance(n, ast.Name) and n.id in names for a in call.args for n in ast.walk(a))
        for call in ast.walk(loop)
    )  # fmt: skip


def carried(file: str, line: int) -> bool:
    """Whether ``line`` is in an assignment inside a loop whose value reads a name it assigns,
    other than as a term of a running sum: each iteration needs the one before (a scan's
    ``h = a * h + b``, an RNN's ``hidden = cell(x[t], hidden)``, efficient-kan's Cox-de Boor
    ``bases = (...) * bases[:, :, :-1] + ...``), so its iterations are a recurrence, not
    elements to batch. A sum (``total = total + f(i)``, ``total += f(i)``) is not carried: its
    terms batch.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "scan.py")
        >>> with open(path, "w") as f:
        ...     _ = f.write("for t in ts:\\n    h = a[t] * h + b[t]\\n    s = s + h.sum()\\n")
        >>> carried(path, 2), carried(path, 3), carried(path, 1)
        (True, False, False)
    """
    spans = _CARRIED.get(file)
    if spans is None:
        tree = parsed(file)
        spans = _CARRIED[file] = {
            (node.lineno, node.end_lineno or node.lineno)
            for loop in (ast.walk(tree) if tree is not None else ())
            if isinstance(loop, (ast.For, ast.AsyncFor, ast.While))
            for stmt in loop.body for node in ast.walk(stmt)
            if isinstance(node, (ast.Assign, ast.AugAssign)) and _recurrence(node)
        }  # fmt: skip
    return any(start <= line <= end for start, end in spans)


#: per file, the (first, last) lines of its carried assignments (see :func:`carried`)
_CARRIED: dict[str, set[tuple[int, int]]] = {}


def _recurrence(node: ast.Assign | ast.AugAssign) -> bool:
    """An assignment whose value reads one of its target names outside a running sum."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    names = {n.id for t in targets for n in ast.walk(t)
             if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}  # fmt: skip
    if not names:
        return False
    terms: list[ast.AST] = [node.value]
    if isinstance(node, ast.AugAssign) and not isinstance(node.op, (ast.Add, ast.Sub)):
        return True  # (x *= a: each needs the last)
    summed = isinstance(node, ast.AugAssign)
    while any(isinstance(t, ast.BinOp) and isinstance(t.op, (ast.Add, ast.Sub)) for t in terms):
        terms = [part for t in terms for part in (
            (t.left, t.right) if isinstance(t, ast.BinOp) and isinstance(t.op, (ast.Add, ast.Sub))
            else (t,))]  # fmt: skip
        summed = True
    if summed:  # (the running total itself, a bare name among the terms, is no dependence)
        terms = [t for t in terms if not (isinstance(t, ast.Name) and t.id in names)]
    return any(isinstance(n, ast.Name) and n.id in names for t in terms for n in ast.walk(t))

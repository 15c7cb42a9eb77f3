"""Whether an ``if`` that looks like a logging gate (``if verbose:``) is on by default.

``def fit(self, x, y, verbose=1)`` with ``if verbose > 0:`` in its training loop runs the
branch on every step unless the caller passes ``verbose=0``: that branch is not an opt-in
logging path, it is the default path (Keras-style ``fit`` methods compute their metrics there).
"""

from __future__ import annotations

import ast
import operator

_OPERATORS = {
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}  # fmt: skip


def _defaults(scope: ast.AST) -> dict[str, object]:
    """Parameter name -> its default, for the defaults that are constants."""
    args = getattr(scope, "args", None)
    if not isinstance(args, ast.arguments):
        return {}
    positional = [*args.posonlyargs, *args.args]
    pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    return {a.arg: d.value for a, d in pairs if isinstance(d, ast.Constant)}


def on_by_default(test: ast.AST, scope: ast.AST) -> bool:
    """``test`` reads only a parameter of ``scope`` that has a constant default, and is true
    for that default (``verbose`` or ``verbose > 0`` with ``verbose=1``).

    Example:
        >>> fn = ast.parse("def fit(x, verbose=1, debug=False):\\n    pass").body[0]
        >>> [on_by_default(ast.parse(t, mode="eval").body, fn)
        ...  for t in ("verbose", "verbose > 0", "verbose > 1", "debug", "x")]
        [True, True, False, False, False]
    """
    defaults = _defaults(scope)
    if isinstance(test, ast.Name):
        return test.id in defaults and bool(defaults[test.id])
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.left, ast.Name) and test.left.id in defaults
            and isinstance(test.comparators[0], ast.Constant)):  # fmt: skip
        return False
    compare = _OPERATORS.get(type(test.ops[0]))
    try:
        return compare is not None and bool(
            compare(defaults[test.left.id], test.comparators[0].value))
    except TypeError:
        return False


def early_returns_before(node: ast.AST, function: ast.AST) -> list[ast.If]:
    """The ``if`` statements of ``function`` that return before ``node`` is reached when
    their test holds (``if iteration not in testing_iterations: return`` at the top of a
    report helper): an earlier statement of a block around ``node`` whose branch ends with
    ``return``. Like an ``if`` around ``node``, they make it run only on some calls. Needs
    the parent links of :func:`torchdoctor.lint.syntax.link_parents`.

    Example:
        >>> from torchdoctor.lint.syntax import link_parents
        >>> fn = ast.parse("def report(it, its):\\n    if it not in its:\\n        return\\n"
        ...                "    flush()\\n").body[0]
        >>> _ = link_parents(fn)
        >>> [ast.unparse(g.test) for g in early_returns_before(fn.body[1].value, fn)]
        ['it not in its']
    """
    found: list[ast.If] = []
    child, above = node, getattr(node, "td_parent", None)
    while above is not None and child is not function:
        for field in ("body", "orelse", "finalbody"):
            block = getattr(above, field, None)
            if not isinstance(block, list) or not any(s is child for s in block):
                continue
            for earlier in block[: next(i for i, s in enumerate(block) if s is child)]:
                if isinstance(earlier, ast.If) and any(
                    branch and isinstance(branch[-1], ast.Return)
                    for branch in (earlier.body, earlier.orelse)
                ):
                    found.append(earlier)
        if isinstance(above, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            break
        child, above = above, getattr(above, "td_parent", None)
    return found


def counter_equals(test: ast.AST, loop: ast.AST | None) -> bool:
    """``step == 0``, ``epoch == 0 and i == 0``, ``i == len(loader) - 1``: the test holds on
    one iteration of ``loop``, whose counter it compares for equality (the variable of a
    ``range`` or the index of an ``enumerate`` the loop walks, or a name it adds to).

    Example:
        >>> loop = ast.parse("for i, b in enumerate(loader):\\n    pass").body[0]
        >>> [counter_equals(ast.parse(t, mode="eval").body, loop)
        ...  for t in ("i == 0", "epoch == 0 and i == 0", "b == 0", "i == 0 or bad", "i > 0")]
        [True, True, False, False, False]
    """
    if isinstance(test, ast.BoolOp):
        parts = [counter_equals(v, loop) for v in test.values]
        return any(parts) if isinstance(test.op, ast.And) else all(parts)
    if not isinstance(test, ast.Compare) or len(test.ops) != 1 or not isinstance(
            test.ops[0], ast.Eq) or not isinstance(loop, ast.For | ast.AsyncFor | ast.While):
        return False  # fmt: skip
    counters = {s.target.id for s in ast.walk(loop) if isinstance(s, ast.AugAssign)
                and isinstance(s.target, ast.Name) and isinstance(s.op, ast.Add)}  # fmt: skip
    if isinstance(loop, ast.For | ast.AsyncFor) and isinstance(loop.iter, ast.Call):
        walked, target = getattr(loop.iter.func, "id", None), loop.target
        if walked == "range" and isinstance(target, ast.Name):
            counters.add(target.id)
        elif walked == "enumerate" and isinstance(target, ast.Tuple) and isinstance(
                target.elts[0], ast.Name):  # fmt: skip
            counters.add(target.elts[0].id)
    sides = [test.left, test.comparators[0]]
    for side, other in (sides, sides[::-1]):
        if isinstance(side, ast.Name) and side.id in counters and not any(
                isinstance(n, ast.Name) and n.id in counters for n in ast.walk(other)):
            return True  # fmt: skip
    return False

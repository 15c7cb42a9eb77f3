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

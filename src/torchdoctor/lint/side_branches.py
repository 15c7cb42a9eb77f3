"""Branches of a training step or a forward that do not run on every step of a CUDA run, so
a host read inside them is no per-step sync (TD201, TD205, TD207 read them through
``skip_sync``): a branch that ends the run (``if not math.isfinite(loss): sys.exit(1)``), and a
branch for another device (``if x.device.type == "mps": x = x.cpu()``, Demucs' workaround for
complex numbers on Apple GPUs: on CUDA it never runs).

Example:
    >>> from torchdoctor.lint import lint_source
    >>> src = ("import torch\\nclass M(torch.nn.Module):\\n    def forward(self, x):\\n"
    ...        "        is_mps = x.device.type == 'mps'\\n        if is_mps:\\n"
    ...        "            x = x.cpu()\\n        return torch.stft(x.cuda(), 64)\\n")
    >>> [f.code for f in lint_source(src)]
    []
"""

from __future__ import annotations

import ast
from typing import Any

from torchdoctor.lint.visitor import constant

_EXITS = frozenset({"sys.exit", "builtins.exit", "builtins.quit", "os._exit", "os.abort"})
#: device types other than CUDA (and the host): a branch for one of them never runs on CUDA
_OTHER_DEVICES = frozenset({"mps", "xla", "xpu", "hpu", "npu", "mtia"})


def ends_the_run(stmt: ast.AST, rules: Any) -> bool:
    """``raise ...`` or ``sys.exit(...)`` / ``exit()`` / ``os._exit(...)``."""
    return isinstance(stmt, ast.Raise) or (isinstance(stmt, ast.Expr) and isinstance(
        stmt.value, ast.Call) and bool(rules.callee(stmt.value) & _EXITS))  # fmt: skip


def skipped_branch(rules: Any, node: ast.AST, context: ast.AST) -> bool:
    """``node`` sits (inside ``context``) in a branch that ends the run, or in the body of an
    ``if`` that tests for another device than CUDA; or ``node`` is a latch's test, read only
    until it first holds (:func:`latched`)."""
    if latched(rules.parent(node), node):
        return True
    child, parent = node, rules.parent(node)
    while parent is not None and parent is not context:
        if isinstance(parent, ast.If) and child is not parent.test:
            in_body = any(s is child for s in parent.body)
            branch = parent.body if in_body else parent.orelse
            if branch and ends_the_run(branch[-1], rules):
                return True
            if in_body and _other_device_test(rules, parent.test, rules.enclosing_scope(parent)):
                return True
        child, parent = parent, rules.parent(parent)
    return False


def _other_device_test(rules: Any, test: ast.AST, scope: ast.AST, depth: int = 0) -> bool:
    """``x.device.type == "mps"``, ``x.is_mps``, ``str(device) == "xla"``, ``a and b`` with
    one such test, or a name the function assigns only such tests (``x_is_mps``)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_other_device_test(rules, v, scope, depth) for v in test.values)
    if isinstance(test, ast.Attribute):
        return test.attr in {f"is_{d}" for d in _OTHER_DEVICES}
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        sides = [test.left, test.comparators[0]]
        return any(constant(s) in _OTHER_DEVICES for s in sides) and any(
            "device" in ast.unparse(s) for s in sides)  # fmt: skip
    if isinstance(test, ast.Name) and depth < 2:
        values = rules.assigned_values(scope, test.id)
        return bool(values) and all(_other_device_test(rules, v, scope, depth + 1) for v in values)
    return False


def latched(statement: Any, test: ast.AST) -> bool:
    """``test`` is the test of ``if flag or <tensor test>:`` whose body sets ``flag = True``
    (SwAV's ``if use_the_queue or not torch.all(queue[i, -1, :] == 0): use_the_queue = True``):
    once it holds, ``or`` never evaluates the tensor again: a read until then, not every step.

    Example:
        >>> src = "if full or not torch.all(q == 0):\\n    full = True\\n"
        >>> stmt = ast.parse(src).body[0]
        >>> latched(stmt, stmt.test)
        True
    """
    if not (isinstance(statement, ast.If) and statement.test is test and isinstance(test, ast.BoolOp)
            and isinstance(test.op, ast.Or) and isinstance(test.values[0], ast.Name)):  # fmt: skip
        return False
    flag = test.values[0].id
    return any(isinstance(s, ast.Assign) and constant(s.value) is True and any(
        isinstance(t, ast.Name) and t.id == flag for t in s.targets) for s in statement.body)  # fmt: skip

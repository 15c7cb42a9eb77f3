"""Syntax helpers over the standard library's :mod:`ast` that every rule family shares.

Example:
    >>> import ast
    >>> dotted(ast.parse("torch.linalg.inv", mode="eval").body)
    'torch.linalg.inv'
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

FOR = (ast.For, ast.AsyncFor)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
LOOPS = (*FOR, ast.While, *COMPREHENSIONS)
SCOPES = (*FUNCTIONS, ast.Lambda, ast.ClassDef, ast.Module)
HOST_COPY_METHODS = frozenset({"cpu", "numpy", "tolist", "item"})
#: Tensor methods that mutate their receiver.
_INPLACE = re.compile(r"^[a-z][a-z0-9_]*[a-z0-9]_$")
#: Method calls that do not change which matrix an expression denotes.
PURE_METHODS = frozenset(
    {
        "t",
        "transpose",
        "contiguous",
        "float",
        "double",
        "half",
        "to",
        "detach",
        "clone",
        "unsqueeze",
        "squeeze",
        "view",
        "reshape",
        "expand", "flatten", "permute",  # (views: x.flatten(1) of an invariant x is invariant)
        "type",
        "cuda",
        # deterministic factories: `torch.eye(n)` in `K + noise * torch.eye(n)` is the same
        # matrix every iteration when its arguments are (random ones are not listed)
        "eye",
        "zeros",
        "ones",
        "full",
        "arange",
        "linspace",
        "zeros_like", "ones_like",
        "exists", "isfile", "isdir",  # (`if os.path.exists(ckpt):` around a load: one answer)
    }
)
#: Dotted names that look like an nn.Module (used where types are unknowable statically).
MODEL_NAME = re.compile(  # (an actor; no feature_extractor, scale_factor or reactor)
    r"(model|net|module|encoder|decoder|policy|backbone|unet|transformer|denoiser|vae|vocoder|"
    r"classifier|teacher|student|draft|(?<!tr)(?<!re)(?<!f)actor|critic|detector|discriminator)s?$",
    re.IGNORECASE,
)
#: a test's names that decide whether to log (``should_log``, ``args.log_interval``,
#: ``print_every``, ``verbose``); ``log`` as a word of the name: ``logits`` is no switch
_LOG_GATE = re.compile(
    r"(?:^|[._])(?:log|logs|logging)(?:$|[._\d])|interval|every|print|verbose|display|report",
    re.IGNORECASE,
)


def parent(node: ast.AST) -> ast.AST | None:
    """The node's parent (set by :func:`link_parents`), None for the module.

    Example:
        >>> tree = ast.parse("f(x)")
        >>> _ = link_parents(tree)
        >>> type(parent(tree.body[0].value)).__name__
        'Expr'
    """
    return getattr(node, "td_parent", None)


def every_step_of(context: ast.AST) -> str:
    """How often code in a training ``context`` runs, for a message: a loop's body runs
    "every step of this training loop"; a step function (Lightning's ``training_step``, a
    ``train_step`` the loop calls) "at every training step (the function runs once a step)".

    Example:
        >>> every_step_of(ast.parse("def training_step(self, b): pass").body[0])
        'at every training step (the function runs once a step)'
    """
    if isinstance(context, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return "at every training step (the function runs once a step)"
    return "every step of this training loop"


def and_others(count: int) -> str:
    """What follows the forward a finding names when ``count`` other classes' forwards call the
    helper too (which one runs is the script's choice: PointNet++'s SSG or MSG model).

    Example:
        >>> and_others(0), and_others(1), and_others(2)
        ('', ' and 1 other forward', ' and 2 other forwards')
    """
    return f" and {count} other forward{'s' if count > 1 else ''}" if count else ""


def same_file_callee(call: ast.Call) -> ast.FunctionDef | None:
    """The definition ``call`` runs, when this file has it: a top-level function
    (``log(loss)``), or a method of the class the call sits in (``self._log(loss)``). Needs
    the parent links of :func:`link_parents`.

    Example:
        >>> tree = ast.parse("class T:\\n    def fit(self):\\n        self.step(1)\\n    def step(self, b):\\n        pass\\n")
        >>> _ = link_parents(tree)
        >>> call = tree.body[0].body[0].body[0].value
        >>> same_file_callee(call).name
        'step'
    """
    node: ast.AST | None = call
    while node is not None and not isinstance(node, ast.Module):
        node = parent(node)
        if isinstance(node, FUNCTIONS) and isinstance(call.func, ast.Attribute):
            owner = parent(node)
            if not (isinstance(owner, ast.ClassDef) and dotted(call.func.value) == "self"):
                return None
            return next((f for f in owner.body if isinstance(f, ast.FunctionDef)
                         and f.name == call.func.attr), None)  # fmt: skip
    if not isinstance(node, ast.Module) or not isinstance(call.func, ast.Name):
        return None
    return next((f for f in node.body if isinstance(f, ast.FunctionDef)
                 and f.name == call.func.id), None)  # fmt: skip


def root_name(expr: ast.AST) -> str | None:
    """The name a chain of attributes, calls and subscripts starts from: ``loss`` for
    ``loss.detach().cpu()``, ``out`` for ``out["loss"].float()``.

    Example:
        >>> root_name(ast.parse("loss.detach().cpu()", mode="eval").body)
        'loss'
    """
    while isinstance(expr, (ast.Attribute, ast.Call, ast.Subscript)):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def link_parents(tree: ast.AST) -> list[ast.AST]:
    """Set ``td_parent`` on every node; return all nodes (the module first).

    Example:
        >>> len(link_parents(ast.parse("x = 1")))  # Module, Assign, Name, Store, Constant
        5
    """
    nodes = [tree]
    stack = [tree]
    iter_children = ast.iter_child_nodes
    while stack:
        node = stack.pop()
        for child in iter_children(node):
            child.td_parent = node
            nodes.append(child)
            stack.append(child)
    return nodes


def dotted(expr: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None.

    Example:
        >>> dotted(ast.parse("torch.cuda.synchronize", mode="eval").body)
        'torch.cuda.synchronize'
        >>> dotted(ast.parse("f().x", mode="eval").body) is None
        True
    """
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    parts.append(expr.id)
    return ".".join(reversed(parts))


def method_name(call: ast.AST) -> str | None:
    """``'item'`` for ``x.item()``; None when the callee is not an attribute.

    Example:
        >>> method_name(ast.parse("loss.item()", mode="eval").body)
        'item'
        >>> method_name(ast.parse("len(x)", mode="eval").body) is None
        True
    """
    func = getattr(call, "func", None)
    return func.attr if isinstance(func, ast.Attribute) else None


def positional(call: ast.Call) -> list[ast.expr]:
    """Positional argument values (``*args`` excluded).

    Example:
        >>> len(positional(ast.parse("f(a, *b, c=1)", mode="eval").body))
        1
    """
    return [a for a in call.args if not isinstance(a, ast.Starred)]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    """Value of keyword argument ``name``, or None.

    Example:
        >>> keyword(ast.parse("f(c=1)", mode="eval").body, "c").value
        1
    """
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def has_star(call: ast.Call) -> bool:
    """``f(*a)`` or ``f(**k)``: the arguments are not visible statically.

    Example:
        >>> has_star(ast.parse("f(**cfg)", mode="eval").body)
        True
    """
    return any(isinstance(a, ast.Starred) for a in call.args) or any(
        kw.arg is None for kw in call.keywords
    )


def arg_values(call: ast.Call) -> list[ast.expr]:
    """Every argument value, positional then keyword.

    Example:
        >>> len(arg_values(ast.parse("f(a, b=2)", mode="eval").body))
        2
    """
    return [*call.args, *(kw.value for kw in call.keywords)]


def constant(expr: ast.AST, default: object = None) -> object:
    """The value of a literal constant, else ``default``.

    Example:
        >>> constant(ast.parse("True", mode="eval").body)
        True
    """
    return expr.value if isinstance(expr, ast.Constant) else default


def calls_in(node: ast.AST) -> list[ast.Call]:
    """All calls under ``node`` (including ``node`` itself).

    Example:
        >>> len(calls_in(ast.parse("f(g(x))")))
        2
    """
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)]


def body_of(node: ast.AST) -> list[ast.AST]:
    """The statements of a loop/function/with body (a list for any node).

    Example:
        >>> len(body_of(ast.parse("for i in x:\\n    pass").body[0]))
        1
    """
    body = getattr(node, "body", None)
    return body if isinstance(body, list) else [node]


def dotted_names_in(node: ast.AST) -> Iterator[str]:
    """Maximal dotted names read in ``node`` (``self.A`` rather than ``self``).

    Example:
        >>> list(dotted_names_in(ast.parse("self.A @ x[i]", mode="eval").body))
        ['self.A', 'x', 'i']
    """
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = dotted(node)
        if name is not None:
            yield name
            return
        yield from dotted_names_in(node.value)  # attribute of a call or subscript
        return
    for child in ast.iter_child_nodes(node):
        yield from dotted_names_in(child)


def target_names(target: ast.AST) -> set[str]:
    """Dotted names bound or mutated by an assignment target.

    Example:
        >>> sorted(target_names(ast.parse("a, self.b[i] = 1, 2").body[0].targets[0]))
        ['a', 'self.b']
    """
    if isinstance(target, (ast.Name, ast.Attribute)):
        name = dotted(target)
        return {name} if name else set()
    if isinstance(target, ast.Subscript):  # A[i] = ... mutates A
        return target_names(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        out: set[str] = set()
        for el in target.elts:
            out |= target_names(el)
        return out
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    return set()


def has_host_copy(expr: ast.AST) -> bool:
    """True when ``expr`` calls ``.cpu()``/``.numpy()``/``.tolist()``/``.item()``/``.to('cpu')``.

    Example:
        >>> has_host_copy(ast.parse("loss.detach().cpu()", mode="eval").body)
        True
        >>> has_host_copy(ast.parse("loss.detach()", mode="eval").body)
        False
    """
    for call in calls_in(expr):
        name = method_name(call)
        if name in HOST_COPY_METHODS:
            return True
        if name == "to" and any(constant(a) == "cpu" for a in arg_values(call)):
            return True
    return False


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def segment(lines: list[str], node: ast.AST) -> str | None:
    """Source text of ``node`` from the file's lines (``ast.get_source_segment`` re-splits the
    whole file on every call; this does not).

    Example:
        >>> source = "y = f(a,\\n      b)\\n"
        >>> segment(source.splitlines(), ast.parse(source).body[0].value)
        'f(a,\\n      b)'
    """
    try:
        first, last = node.lineno - 1, node.end_lineno - 1
        start, end = node.col_offset, node.end_col_offset
    except AttributeError:
        return None
    if first < 0 or last >= len(lines) or end is None:
        return None
    if first == last:
        return lines[first].encode("utf-8")[start:end].decode("utf-8", errors="replace")
    head = lines[first].encode("utf-8")[start:].decode("utf-8", errors="replace")
    tail = lines[last].encode("utf-8")[:end].decode("utf-8", errors="replace")
    return "\n".join([head, *lines[first + 1 : last], tail])


def replace_call_with(text: str) -> Any:
    """A fix's rewrite (``Fix.rewrite``, kind ``"call"``) replacing the reported call with
    ``text`` (LibCST is imported when a fix is applied, not when rules detect).

    Example:
        >>> import libcst as cst
        >>> cst.Module([]).code_for_node(replace_call_with("f(x, k=1)")(None, None))
        'f(x, k=1)'
    """

    def rewrite(node: Any, tools: Any) -> Any:
        import libcst as cst

        return cst.parse_expression(text)

    return rewrite


def with_keyword(source: str, keyword: str) -> str:
    """The source of one call with ``keyword`` (``name=value``) added as its last argument.

    Example:
        >>> with_keyword("x.to(device)", "non_blocking=True"), with_keyword("f()", "k=1")
        ('x.to(device, non_blocking=True)', 'f(k=1)')
        >>> with_keyword("f(a,)", "k=1")
        'f(a, k=1)'
    """
    head = source[:-1].rstrip()
    sep = " " if head.endswith(",") else ("" if head.endswith("(") else ", ")
    return f"{head}{sep}{keyword})"


def statement_list(block: ast.AST | None, stmt: ast.AST) -> list[ast.stmt] | None:
    """The statement list of ``block`` that holds ``stmt`` (a body, orelse or finalbody).

    Example:
        >>> tree = ast.parse("for x in y:\\n    pass\\nz = 1\\n")
        >>> len(statement_list(tree, tree.body[0]))
        2
    """
    for name in ("body", "orelse", "finalbody"):
        statements = getattr(block, name, None)
        if isinstance(statements, list) and any(s is stmt for s in statements):
            return statements
    return None


#: a counter of steps or epochs, compared against a warm-up threshold
_COUNTER = re.compile(r"(?i)(^|_)(step|steps|iter|iters|iteration|it|epoch|t|update|updates)$")


def after_warmup(test: ast.AST) -> bool:
    """``global_step > learning_starts``, ``step >= warmup``, ``epoch > 0``: true on every step
    once a warm-up is over, so no sign of work done only now and then (``step % N == 0`` is).

    Example:
        >>> [after_warmup(ast.parse(t, mode="eval").body)
        ...  for t in ("global_step > learning_starts", "step % 10 == 0", "loss > best")]
        [True, False, False]
    """
    if (dotted(test) or "").endswith("sync_gradients"):  # (Accelerate: every optimizer step)
        return True
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], (ast.Gt, ast.GtE))):
        return False  # fmt: skip
    counter = (dotted(test.left) or "").rsplit(".", 1)[-1]
    return bool(_COUNTER.search(counter)) and not any(isinstance(n, ast.BinOp) and isinstance(
        n.op, ast.Mod) for n in ast.walk(test.comparators[0]))  # fmt: skip


def evaluation_branch(node: ast.AST) -> bool:
    """``if not self.training:`` (or ``if self.training:``'s ``else``) guards ``node``.

    Example:
        >>> nodes = link_parents(ast.parse("def f(self, x):\\n    if not self.training:\\n        x = x[x > 0]\\n"))
        >>> evaluation_branch(nodes[0].body[0].body[0].body[0])
        True
    """
    child, above = node, parent(node)
    while above is not None and not isinstance(above, FUNCTIONS):
        if isinstance(above, (ast.If, ast.IfExp)) and child is not above.test:
            in_body = child is above.body or (
                isinstance(above.body, list) and any(s is child for s in above.body)
            )
            test, negated = above.test, False
            if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
                test, negated = test.operand, True
            if dotted(test) == "self.training" and in_body == negated:
                return True
        child, above = above, parent(above)
    return False

"""TD708: the loss kept with its autograd graph across training steps.

``total_loss += loss`` and ``losses.append(loss)`` in a training loop keep a tensor that still
requires grad (PyTorch FAQ, "accumulating history across your training loop"): every step adds
an autograd node to ``total_loss``'s graph, and every kept loss holds its step's graph (its
nodes, and whatever the backward did not free), so memory grows for the whole run and the
accumulation itself is recorded by autograd. The fix is ``loss.detach()`` (a device tensor, no
sync) or ``loss.item()`` at log time.

A loss returned bare by a step function of the same file that ran its backward (``loss =
self.train_step(batch)`` then ``losses.append(loss)``) counts as one.

Not reported: an accumulator that is itself differentiated later (``total = total + loss``
then ``total.backward()``, ``sum(losses).backward()``: deliberate), accumulation under
``torch.no_grad()``, values already detached or read (``.detach()``, ``.item()``, ``.data``,
``float(...)``).
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import same_file_callee
from torchdoctor.lint.tensors import FRAMEWORK_STEPS
from torchdoctor.lint.visitor import (
    FOR,
    FUNCTIONS,
    RuleVisitor,
    dotted,
    method_name,
)

RULES = (
    Rule(
        "TD708",
        "loss-kept-with-graph",
        "warning",
        "a loss that still requires grad accumulated across training steps (total_loss += "
        "loss, losses.append(loss); in Lightning's training_step, self.losses.append(loss)): "
        "every step's autograd graph stays alive",
        "accumulate `loss.detach()` (stays on the device, no sync), or read `loss.item()` when "
        "you log",
        "for x, y in loader:\n    loss = crit(model(x), y)\n    loss.backward()\n"
        "    total_loss += loss",
        "for x, y in loader:\n    loss = crit(model(x), y)\n    loss.backward()\n"
        "    total_loss += loss.detach()",
        runtime_cost=False,
    ),
)

_LOOPS = (*FOR, ast.While)
#: calls and attributes after which the value no longer carries the graph
_DETACHING_METHODS = frozenset({"detach", "item", "tolist", "numpy", "detach_"})
_DETACHING_CALLS = frozenset(
    {"float", "int", "bool", "str", "repr", "format", "len", "round", "abs"}
)
#: receivers of .backward(...) that are not the loss: scaler.scale(loss).backward()
_NOT_LOSS = re.compile(r"^(self|scaler|grad_scaler|amp|accelerator|fabric|engine|torch)$")
_NO_GRAD = re.compile(r"(^|\.)(no_grad|inference_mode)$")
_GROWS = frozenset({"append", "extend", "insert"})


def _nested(node: ast.AST) -> bool:
    return isinstance(node, (*FUNCTIONS, ast.ClassDef, ast.Lambda))


def _walk_body(nodes: list[ast.stmt]):
    """Nodes of ``nodes`` and below, not entering nested functions or classes."""
    stack: list[ast.AST] = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in ast.iter_child_nodes(node) if not _nested(c))


def _backward_operands(call: ast.Call) -> list[ast.AST]:
    """What ``call`` differentiates: ``loss`` in ``loss.backward()``,
    ``scaler.scale(loss).backward()``, ``accelerator.backward(loss)``,
    ``torch.autograd.backward(loss)``, Lightning's ``self.manual_backward(loss)``."""
    if method_name(call) == "manual_backward":  # (manual optimisation: training_step returns none)
        return call.args[:1]
    if method_name(call) != "backward":
        return []
    if call.args:  # accelerator.backward(loss), torch.autograd.backward(loss)
        return [call.args[0]]
    return [call.func.value]  # type: ignore[attr-defined]


def _names(expr: ast.AST) -> set[str]:
    return {
        n.id
        for n in ast.walk(expr)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and not _NOT_LOSS.match(n.id)
    }


#: tensor methods whose result never requires grad (indices, booleans)
_NO_GRAPH_METHODS = frozenset({"argmax", "argmin", "argsort", "eq", "ne", "gt", "ge", "lt", "le",
                               "isnan", "isinf", "isfinite"})


def _graph_names(expr: ast.AST) -> set[str]:
    """``_names`` of the parts of ``expr`` that can carry a graph: not inside a comparison or an
    argmax (``(logits.argmax(1) == y).sum()`` counts hits: booleans, no graph).

    Example:
        >>> sorted(_graph_names(ast.parse("(logits.argmax(1) == y).sum() + loss", mode="eval")))
        ['loss']
    """
    out: set[str] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Compare) or (
                isinstance(node, ast.Call) and method_name(node) in _NO_GRAPH_METHODS):
            continue
        out |= _names(node) if isinstance(node, ast.Name) else set()
        stack.extend(ast.iter_child_nodes(node))
    return out


def _detached(expr: ast.AST) -> bool:
    """The value no longer carries a graph: ``loss.detach()``, ``loss.item()``, ``loss.data``,
    ``float(loss)``, an f-string."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Call):
            if method_name(node) in _DETACHING_METHODS:
                return True
            if isinstance(node.func, ast.Name) and node.func.id in _DETACHING_CALLS:
                return True
        if isinstance(node, ast.Attribute) and node.attr == "data":
            return True
        if isinstance(node, ast.JoinedStr):
            return True
    return False


class HistoryRules(RuleVisitor):
    """TD708 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("def train(model, loader, opt):\\n    total = 0\\n    for x in loader:\\n"
        ...        "        loss = model(x).sum()\\n        loss.backward()\\n        opt.step()\\n"
        ...        "        total += loss\\n    return total\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD708']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"\.backward\(|def training_step\(", r"\+=|\.append\(|= *\w+ *\+"),)

    def _loop(self, node: ast.For | ast.While) -> None:
        losses: set[str] = set()
        for sub in _walk_body(node.body):
            if isinstance(sub, ast.Call):
                for operand in _backward_operands(sub):
                    losses |= _names(operand)
        losses |= _step_results(node)
        if not losses:
            return
        losses |= _components(node, losses)
        differentiated = self._differentiated(node)
        for sub in _walk_body(node.body):
            if isinstance(sub, (*_LOOPS,)) and sub is not node:
                continue  # (an inner loop reports for itself when it trains)
            found = self._accumulation(sub, losses)
            if found is None:
                continue
            target, value = found
            if target in differentiated or target in losses or self._under_no_grad(sub, node):
                continue
            if self.enclosing_loops(sub)[:1] != [node]:
                continue
            self.report(
                sub,
                "TD708",
                f"`{self.code_of(sub)}` keeps the loss with its autograd graph across steps "
                f"(`{self.code_of(value)}` still requires grad): each step's graph stays alive "
                "and memory grows for the whole run; accumulate `.detach()` (no sync), or "
                "`.item()` when you log",
            )

    @staticmethod
    def _accumulation(node: ast.AST, losses: set[str]) -> tuple[str, ast.AST] | None:
        """``(accumulator, value)`` for ``acc += loss``, ``acc = acc + loss``,
        ``acc.append(loss)`` where the value holds a loss, undetached."""
        target = value = None
        if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
            target, value = dotted(node.target), node.value
            if isinstance(node.target, ast.Subscript) and dotted(node.target.value):
                target = ast.unparse(node.target)  # (running["ce"] += ce_loss)
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.value, ast.BinOp)
            and isinstance(node.value.op, ast.Add)
        ):
            target = dotted(node.targets[0])
            sides = (node.value.left, node.value.right)
            if target is None or not any(dotted(s) == target for s in sides):
                return None
            value = next(s for s in sides if dotted(s) != target)
        elif (
            isinstance(node, ast.Call)
            and method_name(node) in _GROWS
            and node.args
            and isinstance(node.func.value, (ast.Name, ast.Attribute))  # type: ignore[attr-defined]
        ):
            target, value = dotted(node.func.value), node.args[-1]  # type: ignore[attr-defined]
        if target is None or value is None:
            return None
        if not isinstance(value, (ast.Dict, ast.Tuple, ast.List)) and _detached(value):
            return None
        if isinstance(value, (ast.Dict, ast.Tuple, ast.List)):  # a record of several values:
            items = value.values if isinstance(value, ast.Dict) else value.elts  # a loss kept
            value = next((e for e in items if isinstance(e, ast.Name)  # bare in it keeps its
                          and e.id in losses), None)  # graph too (stats.append({"loss": loss}))
            return None if value is None else (target, value)
        return (target, value) if _graph_names(value) & losses else None

    def _differentiated(self, loop: ast.AST) -> set[str]:
        """Names differentiated anywhere in the function around ``loop``: an accumulator that
        is (``sum(losses).backward()``) is kept on purpose."""
        scope = self.enclosing_scope(loop)
        body = scope.body if hasattr(scope, "body") else []
        out: set[str] = set()
        for sub in _walk_body(body):
            if isinstance(sub, ast.Call):
                for operand in _backward_operands(sub):
                    out |= {dotted(n) or "" for n in ast.walk(operand)
                            if isinstance(n, (ast.Name, ast.Attribute))}  # fmt: skip
        return out

    def _under_no_grad(self, node: ast.AST, stop: ast.AST) -> bool:
        p = self.parent(node)
        while p is not None and p is not stop:
            if isinstance(p, ast.With) and any(
                isinstance(item.context_expr, ast.Call)
                and _NO_GRAD.search(dotted(item.context_expr.func) or "")
                for item in p.items
            ):
                return True
            p = self.parent(p)
        return False

    def visit_For(self, node: ast.For) -> None:
        self._loop(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        """Lightning's ``training_step``: the loss it returns is the one the framework
        differentiates (under manual optimisation, the one it hands ``self.manual_backward``);
        one kept on ``self`` (``self.losses.append(loss)``) outlives the step."""
        if node.name not in FRAMEWORK_STEPS or not isinstance(self.parent(node), ast.ClassDef):
            return
        losses = {n for r in _walk_body(node.body) if isinstance(r, ast.Return) and r.value
                  for n in _names(r.value)}  # fmt: skip
        losses |= {n for c in _walk_body(node.body) if isinstance(c, ast.Call)  # (manual optimisation:
                   for operand in _backward_operands(c) for n in _names(operand)}  # manual_backward)
        losses |= _components(node, losses)
        for sub in _walk_body(node.body):
            found = self._accumulation(sub, losses) if losses else None
            if found is None or not found[0].startswith("self.") or self._under_no_grad(sub, node):
                continue
            self.report(
                sub,
                "TD708",
                f"`{self.code_of(sub)}` keeps a loss of `training_step` on `self`, with "
                "its autograd graph: each step's graph stays alive until the list is cleared; "
                "keep `.detach()` (no sync), or `.item()` when you log",
            )

    def visit_While(self, node: ast.While) -> None:
        self._loop(node)


def _step_results(loop: ast.AST) -> set[str]:
    """Names the loop assigns the result of a step function of this file (``loss =
    self.train_step(batch)``) that runs ``loss.backward()`` and returns that loss bare (still
    requiring grad; not ``loss.item()`` / ``loss.detach()``).

    Example:
        >>> from torchdoctor.lint.syntax import link_parents
        >>> tree = ast.parse("def step(b):\\n    loss = f(b)\\n    loss.backward()\\n    return loss\\n"
        ...                  "for b in data:\\n    l = step(b)\\n")
        >>> _ = link_parents(tree)
        >>> sorted(_step_results(tree.body[1]))
        ['l']
    """
    out: set[str] = set()
    for n in _walk_body(loop.body):  # type: ignore[attr-defined]
        if not (isinstance(n, ast.Assign) and len(n.targets) == 1
                and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Call)):  # fmt: skip
            continue
        function = same_file_callee(n.value)
        if function is None:
            continue
        differentiated = {name for c in _walk_body(function.body) if isinstance(c, ast.Call)
                          for operand in _backward_operands(c) if isinstance(operand, ast.Name)
                          for name in _names(operand)}  # fmt: skip
        returned = [r.value for r in _walk_body(function.body) if isinstance(r, ast.Return)]
        if differentiated and returned and all(
                isinstance(v, ast.Name) and v.id in differentiated for v in returned):  # fmt: skip
            out.add(n.targets[0].id)
    return out


def _components(loop: ast.AST, losses: set[str]) -> set[str]:
    """Names the loop assigns and adds up into a loss (``loss = ce_loss + reg_loss``): each
    holds its part of the graph as well.

    Example:
        >>> loop = ast.parse("for b in data:\\n    ce = f(b)\\n    loss = ce + 0.1 * reg\\n").body[0]
        >>> sorted(_components(loop, {"loss"}))
        ['ce']
    """
    assigned = {t.id for n in _walk_body(loop.body) if isinstance(n, ast.Assign)  # type: ignore[attr-defined]
                for t in n.targets if isinstance(t, ast.Name)}  # fmt: skip
    out: set[str] = set()
    for n in _walk_body(loop.body):  # type: ignore[attr-defined]
        if (isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                and n.targets[0].id in losses and isinstance(n.value, ast.BinOp)):
            out |= {m.id for m in ast.walk(n.value) if isinstance(m, ast.Name)} & assigned
    return out - losses

"""TD306: a tensor grown inside a loop by concatenating onto itself.

``out = torch.cat([out, y])`` (also ``torch.cat((out, y))``, ``out = y if out is None else
torch.cat([out, y])``, ``torch.vstack`` / ``hstack``) copies everything gathered so far at
every iteration: n iterations copy O(n^2) elements and allocate a new, larger buffer each time.
Appending the pieces to a list and calling ``torch.cat`` once after the loop copies each
element once.

Reported only when the loop reads the grown tensor nowhere else (its shape, ``len``, an
``is None`` test and a block that leaves the loop, ending in ``return`` or ``break``,
excepted) and assigns it only by the concatenation (the first piece under
``if out is None:`` excepted), and not in a loop over a configuration list (``for c in
self.config.types``: a handful of iterations). A loop that feeds the growing tensor back
(``model(x)``, an autoregressive decoder) needs the whole tensor every iteration: TD604 reports
the decoder; one that decodes with a KV cache (a call given ``past_key_values=`` / ``cache=``)
keeps the generated ids so, one column a step beside a model call: not reported either.
A plain object's attribute grown so by a method that a step loop calls every step (a replay
buffer's ``add``) is the same growth across calls; a module's memory bank is left alone.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.model_calls import names_a_module
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.rules_decode import cache_off, last_tokens
from torchdoctor.lint.syntax import statement_list
from torchdoctor.lint.visitor import (
    FOR,
    FUNCTIONS,
    RuleVisitor,
    dotted,
    dotted_names_in,
    method_name,
    target_names,
)

RULES = (
    Rule(
        "TD306",
        "cat-grown-in-loop",
        "warning",
        "a tensor grown in a loop by concatenating onto itself (out = torch.cat([out, y])), "
        "or a plain object's buffer grown so by a method a loop calls every step (a replay "
        "buffer's self.states = torch.cat([self.states, new])): each iteration copies "
        "everything gathered so far, quadratic in the iterations (not the token ids of a "
        "generation loop: fed back to the model, TD604 reports that loop; beside a KV cache, "
        "one column a step)",
        "append the pieces to a list and torch.cat it once after the loop",
        "out = torch.empty(0, 10)\nfor x in loader:\n    out = torch.cat([out, model(x)])",
        "parts = []\nfor x in loader:\n    parts.append(model(x))\nout = torch.cat(parts)",
    ),
)

#: concatenations that return a new tensor holding all their inputs
_CONCATS = frozenset(
    {"torch.cat", "torch.concat", "torch.concatenate", "torch.vstack", "torch.hstack",
     "torch.dstack", "torch.row_stack", "torch.column_stack"}
)  # fmt: skip
_LOOPS = (*FOR, ast.While)
#: reads of the grown tensor that do not use its data: out.shape[0], out.size(0), len(out)
_METADATA = frozenset({"shape", "size", "numel", "ndim", "dim", "dtype", "device"})
#: an iterable read from the settings (``self.config.conditioning_types``): a few items
_SETTINGS = re.compile(r"(^|[._])(config|cfg|conf|settings)([._]|$)")


class CatGrowthRules(RuleVisitor):
    """TD306 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef collect(model, loader):\\n    out = torch.empty(0)\\n"
        ...        "    for x in loader:\\n        out = torch.cat([out, model(x)])\\n"
        ...        "    return out\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD306']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"\.(cat|concat|concatenate|vstack|hstack|dstack|row_stack|column_stack)\(",),)

    def _assigned_name(self, call: ast.Call) -> tuple[str, ast.Assign] | None:
        """``(out, statement)`` for ``out = torch.cat(...)``, ``out = y if out is None else
        torch.cat(...)`` or ``out = torch.cat(...)[-window:]`` (a replay buffer kept to its
        last ``window`` rows: each append still copies all of them)."""
        node, parent = call, self.parent(call)
        if isinstance(parent, ast.IfExp) and node is not parent.test:
            node, parent = parent, self.parent(parent)
        if isinstance(parent, ast.Subscript) and node is parent.value and isinstance(
                parent.slice, ast.Slice):  # fmt: skip
            node, parent = parent, self.parent(parent)
        if (
            isinstance(parent, ast.Assign)
            and parent.value is node
            and len(parent.targets) == 1
            and isinstance(parent.targets[0], ast.Name)
        ):
            return parent.targets[0].id, parent
        return None

    def visit_Call(self, node: ast.Call) -> None:
        if not (self.callee(node) & _CONCATS and node.args):
            return
        pieces = node.args[0]
        if not isinstance(pieces, (ast.List, ast.Tuple)) or len(pieces.elts) < 2:
            return
        found = self._assigned_name(node)
        if found is None:
            self._check_attribute_growth(node, pieces)
            return
        name, assign = found
        if not any(isinstance(e, ast.Name) and e.id == name for e in pieces.elts):
            return
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, _LOOPS)]
        window = isinstance(assign.value, ast.Subscript)  # (a replay buffer: sampled, read)
        if not loops or not self._only_grown(loops[0], name, assign, pieces, window):
            return
        if isinstance(loops[0], FOR) and (
            any(_SETTINGS.search(n) for n in dotted_names_in(loops[0].iter))
            or _a_few_constants(loops[0].iter)
        ):
            return  # a loop over a configuration list or constants: a handful of iterations
        if _decodes_with_a_cache(loops[0]) or _feeds_a_recurrent_step(loops[0], pieces, name):
            return  # a generation loop's token ids: one column a step, next to a model call
        if isinstance(assign.value, ast.Subscript):  # out = torch.cat([out, y])[-window:]
            window = self.code_of(assign.value.slice)
            self.report(
                node,
                "TD306",
                f"`{name}` grows by `{self.code_of(node.func)}` at every iteration and keeps "
                f"`[{window}]`: each call copies the whole window into a new buffer; write "
                "the new rows into a tensor allocated once at the window's size, at an index "
                "that wraps around (a ring buffer), or keep the pieces in a list "
                "(collections.deque) and `torch.cat` them when the window is read",
            )
            return
        self.report(
            node,
            "TD306",
            f"`{name}` grows by `{self.code_of(node.func)}` at every iteration: each call copies "
            "everything gathered so far (quadratic in the iterations, a new larger buffer "
            f"each time); append the pieces to a list and `torch.cat` it once after the loop",
        )

    def _check_attribute_growth(self, node: ast.Call, pieces: ast.AST) -> None:
        """``self.states = torch.cat([self.states, new])`` in a method of a plain class that a
        step loop calls every step (a GFlowNet's or an RL agent's replay buffer ``add``): the
        same quadratic growth, across calls instead of iterations."""
        assign, method = self.parent(node), self.enclosing_scope(node)
        owner = self.parent(method) if isinstance(method, FUNCTIONS) else None
        grown = dotted(assign.targets[0]) if isinstance(assign, ast.Assign) and len(
            assign.targets) == 1 and assign.value is node else None  # fmt: skip
        project = self.context.project
        if not (grown or "").startswith("self.") or not isinstance(owner, ast.ClassDef):
            return
        if project is None or all(dotted(e) != grown for e in pieces.elts):  # type: ignore[attr-defined]
            return
        if any(ast.unparse(b).endswith("Module") for b in owner.bases) or self.enclosing_loops(node):
            return  # (a module's memory bank; a loop of the method's own: not this shape)
        site = project.method_called_in_loop(owner.name, method.name)  # type: ignore[union-attr]
        if site is not None:
            self.report(
                node,
                "TD306",
                f"`{grown}` grows by `{self.code_of(node.func)}` at every call of "
                f"`{owner.name}.{method.name}`, which the loop at {site[0]}:{site[1]} calls every "
                "step: each call copies the whole buffer into a new, larger one (quadratic over "
                "the run); allocate it once at its capacity and write the new rows at an index "
                "(a ring buffer), or keep the pieces in a list and `torch.cat` them when read",
            )

    def _only_grown(
        self, loop: ast.AST, name: str, assign: ast.Assign, pieces: ast.AST, window: bool = False
    ) -> bool:
        """The loop reads ``name`` only to concatenate onto it (or for its shape / an ``is
        None`` test) and assigns it only by the concatenation (or under ``if name is None``).
        A kept window (``buf = torch.cat([buf, new])[-n:]``, a replay buffer) may also be
        sampled by index (``buf[idx]``): the copy per append is the same; the newest piece
        may be read (``chosen[-1]``)."""
        own = {id(e) for e in pieces.elts}  # type: ignore[attr-defined]
        for node in _walk(loop):
            if not (isinstance(node, ast.Name) and node.id == name):
                continue
            if isinstance(node.ctx, ast.Store):
                if node is not assign.targets[0] and not self._under_none_test(node, name, loop):
                    return False
            elif id(node) not in own and not self._metadata_read(node, name):
                parent = self.parent(node)
                if window and isinstance(parent, ast.Subscript) and parent.value is node:
                    continue
                if isinstance(parent, ast.Subscript) and parent.value is node and last_tokens(
                        parent) and not self._fed_to_a_call(parent, loop):  # fmt: skip
                    continue  # (farthest-point sampling's pts[chosen[-1]]: the newest piece,
                    # which a list keeps too; not one a model call is fed, a decoder's ids[:, -1:])
                if not self._on_the_way_out(node, loop):
                    return False
        return True

    def _fed_to_a_call(self, newest: ast.Subscript, loop: ast.AST) -> bool:
        """The newest piece goes into a call: directly (``model(ids[:, -1:], state)``), or
        through a name a module's call is given (``step_in = ids[:, -1:]`` then
        ``decoder(step_in, h)``: a recurrent decoder's input, one token a step)."""
        holder = self.parent(newest)
        if isinstance(holder, ast.Call):
            return True
        alias = holder.targets[0] if isinstance(holder, ast.Assign) and len(holder.targets) == 1 else None
        return isinstance(alias, ast.Name) and any(
            isinstance(c, ast.Call) and names_a_module((dotted(c.func) or "").rsplit(".", 1)[-1])
            and any(isinstance(a, ast.Name) and a.id == alias.id for a in c.args)
            for c in _walk(loop)
        )  # fmt: skip

    def _on_the_way_out(self, node: ast.AST, loop: ast.AST) -> bool:
        """``node`` sits in a block of the loop that leaves it (ends with ``return``,
        ``break`` or ``raise``): read once, when the loop ends (a speculative decoder's
        ``return torch.tensor(accepted.tolist() + [t])`` at the first rejected token).

        Example:
            >>> from torchdoctor.lint import lint_source
            >>> src = ("import torch\\ndef accept(ok, toks, out):\\n    for i in range(9):\\n"
            ...        "        if ok[i]:\\n            out = torch.cat([out, toks[i]])\\n"
            ...        "            continue\\n        return out.sum()\\n    return out\\n")
            >>> [f.code for f in lint_source(src)]
            ['TD306']
        """
        child, parent = node, self.parent(node)
        while parent is not None and child is not loop:
            block = statement_list(parent, child)
            if block is not None and isinstance(block[-1], (ast.Return, ast.Break, ast.Raise)):
                rest = block[next(i for i, s in enumerate(block) if s is child):]
                if not any(_continues(s) for s in rest):
                    return True  # (from here on, every path leaves the loop)
            child, parent = parent, self.parent(parent)
        return False

    def _metadata_read(self, node: ast.Name, name: str) -> bool:
        parent = self.parent(node)
        if isinstance(parent, ast.Attribute) and parent.attr in _METADATA:
            return True
        if isinstance(parent, ast.Call) and node in parent.args and method_name(parent) is None:
            return "builtins.len" in self.callee(parent)
        return _is_none_test(parent, name)

    def _under_none_test(self, node: ast.AST, name: str, loop: ast.AST) -> bool:
        """``if out is None: out = y`` (the first piece)."""
        parent = self.parent(node)
        while parent is not None and parent is not loop:
            if isinstance(parent, (ast.If, ast.IfExp)) and _is_none_test(parent.test, name):
                return True
            parent = self.parent(parent)
        return False


#: keywords that hand a decoder its key/value cache (a generation loop's model call)
_CACHE_KEYWORD = re.compile(r"^(past_key_values?|past|(kv_)?cache|layer_past|use_cache)$")


def _decodes_with_a_cache(loop: ast.AST) -> bool:
    """The loop calls something with a KV-cache keyword: it generates a token per step.

    Example:
        >>> loop = ast.parse("for _ in range(9):\\n    out = model(ids, past_key_values=pkv)")
        >>> _decodes_with_a_cache(loop.body[0])
        True
    """
    return any(isinstance(n, ast.Call) and any(k.arg and _CACHE_KEYWORD.match(k.arg) and not cache_off(k.value)
                   for k in n.keywords)  # (use_cache=False: none)
               for n in _walk(loop))  # fmt: skip


def _feeds_a_recurrent_step(loop: ast.AST, pieces: ast.AST, grown: str) -> bool:
    """The new piece goes into a call that carries a state from step to step (``logits,
    states = model.step(nxt, states, t)``): a recurrent decoder generating a token a step,
    its ids grown one column at a time (not an RNN's outputs, which are the state itself).

    Example:
        >>> loop = ast.parse("for i in r:\\n    ids = cat([ids, nxt])\\n    y, s = m.step(nxt, s)").body[0]
        >>> _feeds_a_recurrent_step(loop, loop.body[0].value.args[0], "ids")
        True
    """
    new = {e.id for e in pieces.elts if isinstance(e, ast.Name) and e.id != grown}  # type: ignore[attr-defined]
    new |= {t.id for node in _walk(loop) if isinstance(node, ast.Assign)  # (x = idx_next: the
            and isinstance(node.value, ast.Name) and node.value.id in new  # piece fed next)
            for t in node.targets if isinstance(t, ast.Name)}  # fmt: skip
    for node in _walk(loop):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        carried = {n for t in node.targets for n in target_names(t)}
        args = {a.id for a in node.value.args if isinstance(a, ast.Name)}
        if (args & carried) - new and (args & new) - carried:
            return True
    return False


def _a_few_constants(it: ast.AST) -> bool:
    """A literal of at most 8 items (``("rgb", "depth")``) or a constant named in capitals
    (``self.MODALITIES[1:]``): a handful of iterations.

    Example:
        >>> _a_few_constants(ast.parse("self.MODALITIES[1:]", mode="eval").body)
        True
        >>> _a_few_constants(ast.parse("loader", mode="eval").body)
        False
    """
    while isinstance(it, ast.Subscript):
        it = it.value
    if isinstance(it, (ast.Tuple, ast.List, ast.Set)):
        return len(it.elts) <= 8
    name = (dotted(it) or "").rsplit(".", 1)[-1]
    return len(name) > 1 and name.isupper()


def _is_none_test(test: ast.AST | None, name: str) -> bool:
    """``name is None`` / ``name is not None``."""
    return (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], (ast.Is, ast.IsNot))
        and isinstance(test.left, ast.Name)
        and test.left.id == name
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value is None
    )


def _continues(statement: ast.AST) -> bool:
    """``statement`` holds a ``continue`` of the loop it sits in (not of a nested loop)."""
    stack = [statement]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Continue):
            return True
        if not isinstance(node, (*_LOOPS, *FUNCTIONS, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _walk(loop: ast.AST):
    """Nodes of the loop (its header included), not entering nested functions or classes."""
    stack = list(ast.iter_child_nodes(loop))
    while stack:
        node = stack.pop()
        if isinstance(node, (*FUNCTIONS, ast.ClassDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))

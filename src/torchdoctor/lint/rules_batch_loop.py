"""TD304: a loop over the items of a batch that runs the same tensor ops on each and stacks the
results, writes each into ``out[i]`` or sums them (seed 000's part sampling per image;
per-sample model calls and losses; a row-by-row normalization).

``for b in range(x.shape[0]): out.append(f(x[b]))`` then ``torch.stack(out)``: the results
have one shape, so the items could have gone through ``f`` together: torch ops broadcast over a
leading batch dimension, modules take batches, and ``torch.vmap(f)(x)`` batches a per-item
function. The loop costs one launch per op per item plus the Python around them.

Recognised: ``for i in range(x.shape[0] | x.size(0) | len(x))`` (``len`` only for a tensor made
in the function, or a parameter the body slices one item at a time, ``model(x[i:i + 1])``)
with ``x[i]`` in the body, appending to a list that ``torch.stack`` /
``torch.cat`` reads after the loop, or writing each result into a tensor made before the loop
(``out[i] = a[i] * b[i]``, ``x[i] = x[i] / x[i].norm()``, after temporaries of the item
``d2 = ...; out[i] = torch.exp(-d2)``, a pairwise table filled in a
nested loop ``d[b, k] = torch.dist(x[b], c[k])``, or an in-place method on each item,
``out[i].index_add_(0, idx[i], src[i])``: cleanrl's C51 projection, one ``scatter_add_(1, idx,
src)`` batched); summing each result, the loop's one
statement (``loss = loss + F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])``); and
``torch.stack([f(x[i]) for i in range(...)])``. Not
reported: recurrences (a state carried from one item to the next: ``h = cell(x[t], h)``),
bodies that read tensors on the host (``.item()``, ``.cpu()``: the per-item work is host work),
bodies without a tensor op (pure indexing), bodies whose only work is factoring one matrix per
item (TD103, the more precise finding; a body that also computes with the factor is both).
"""

from __future__ import annotations

import ast

from torchdoctor.lint.batch_items import (
    derived_batch,
    first_index,
    indexes_at,
    inplace_on_item,
    item_indices,
    len_of,
    sized_alike,
    sized_by_shape,
    sliced_parameter,
)
from torchdoctor.lint.linalg_calls import BATCHED_LINALG, BATCHED_LINALG_METHODS
from torchdoctor.lint.loop_shapes import carries_state, ragged_items, summed_per_item
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import MODEL_NAME, same_file_callee
from torchdoctor.lint.visitor import (
    HOST_COPY_METHODS,
    RuleVisitor,
    dotted,
    method_name,
    statement_list,
)

RULES = (
    Rule(
        "TD304",
        "per-item-loop-then-stack",
        "warning",
        "a loop over a batch's items (for i in range(x.shape[0])) running the same tensor ops on "
        "x[i] and stacking the results, or writing each into out[i]",
        "run the ops on the whole batch: torch ops broadcast over a leading batch dimension, "
        "modules take batches, torch.vmap(f)(x) batches a per-item function",
        "out = []\nfor b in range(heat.shape[0]):\n"
        "    out.append(torch.topk(heat[b].flatten(), k).indices)\nidx = torch.stack(out)",
        "idx = torch.topk(heat.flatten(1), k, dim=1).indices",
        "torch.vmap",
        seed="000",
    ),
)

_STACKS = frozenset({"torch.stack", "torch.cat", "torch.concat", "torch.concatenate"})
#: torch calls that return a sequence (of tensors, or anything: a checkpoint): walking it is
#: walking chunks or records, not a tensor's items
_SEQUENCE_MAKERS = frozenset(
    {"torch.load", "torch.hub.load", "torch.jit.load", "torch.split", "torch.chunk",
     "torch.unbind", "torch.tensor_split", "torch.meshgrid", "torch.nonzero", "torch.where",
     "torch.unique_consecutive", "torch.broadcast_tensors", "torch.atleast_1d", "torch.hsplit",
     "torch.vsplit", "torch.dsplit"}
)  # fmt: skip
_SIZE_METHODS = frozenset({"size"})
#: in-place scatters of one row's values at that row's indices (batched: scatter_add_ on dim 1)
_ROW_SCATTERS = frozenset({"index_add_", "scatter_add_"})
#: tensor methods that make a new tensor (``feats.new_empty(...)``), as torch's factories do
_NEW_TENSOR_METHODS = frozenset({"new_empty", "new_zeros", "new_ones", "new_full"})
#: torch namespaces whose calls return no tensor to walk (loaders, optimizers, devices, hubs)
_NOT_TENSOR_OPS = ("torch.utils.", "torch.optim.", "torch.cuda.", "torch.distributed.",
                   "torch.hub.", "torch.jit.", "torch.compile", "torch.backends.")  # fmt: skip


class BatchLoopRules(RuleVisitor):
    """TD304 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef parts(heat, k):\\n    out = []\\n"
        ...        "    for b in range(heat.shape[0]):\\n"
        ...        "        out.append(torch.topk(heat[b].flatten(), k).indices)\\n"
        ...        "    return torch.stack(out)\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD304']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (
        (r"torch\.(stack|cat|concat)", r"range\("),
        (r"range\(", r"\]\s*=[^=]"),  # (out[i] = ...: items written one by one)
        (r"range\(", r"\+=|\b(\w+)\s*=\s*\1\s*\+"),  # (loss = loss + ...: items summed)
        (r"\bfor \w+ in \w+:", r"torch\.(stack|cat|concat)|\+=|\b(\w+)\s*=\s*\2\s*\+"),
    )

    def _batch_of(self, it: ast.AST, scope: ast.AST) -> str | None:
        """``x`` for ``range(x.shape[0])``, ``range(x.size(0))``, ``range(len(x))`` (``x`` a
        tensor made in the function)."""
        if not (
            isinstance(it, ast.Call)
            and dotted(it.func) == "range"
            and len(it.args) == 1
            and not it.keywords
        ):
            return None
        n = it.args[0]
        if isinstance(n, ast.Name):  # B = x.shape[0] / B, K, d = x.shape; range(B)
            n = self._size_named(n, scope) or n
            if isinstance(n, ast.Attribute):
                return dotted(n.value)
        if (  # x.shape[0]
            isinstance(n, ast.Subscript)
            and isinstance(n.value, ast.Attribute)
            and n.value.attr == "shape"
            and isinstance(n.slice, ast.Constant)
            and n.slice.value == 0
        ):
            return dotted(n.value.value)
        if (  # x.size(0)
            isinstance(n, ast.Call)
            and method_name(n) in _SIZE_METHODS
            and len(n.args) == 1
            and isinstance(n.args[0], ast.Constant)
            and n.args[0].value == 0
        ):
            return dotted(n.func.value)  # type: ignore[attr-defined]
        name = len_of(it)
        if name and self._made_by_torch(name, scope):
            return name
        return None

    def _size_named(self, name: ast.Name, scope: ast.AST) -> ast.AST | None:
        """What the one assignment to ``name`` in ``scope`` reads the size from: ``x.shape[0]``
        / ``x.size(0)`` / ``len(x)`` for ``B = ...``, ``x.shape`` for ``B, K, d = x.shape``."""
        values = self.assigned_values(scope, name.id)
        unpacked = [
            node.value
            for node in ast.walk(scope)
            if isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Tuple)
            and node.targets[0].elts
            and isinstance(node.targets[0].elts[0], ast.Name)
            and node.targets[0].elts[0].id == name.id
        ]
        if len(values) + len(unpacked) != 1:
            return None
        if unpacked:
            value = unpacked[0]
            return value if isinstance(value, ast.Attribute) and value.attr == "shape" else None
        return values[0]

    def _made_by_torch(
        self, name: str, scope: ast.AST, before: int | None = None, unassigned: bool = False
    ) -> bool:
        """Every value assigned to ``name`` in ``scope`` (before line ``before``) is a torch
        call; ``unassigned``: a name never assigned (a parameter) passes too."""
        values = [
            v
            for v in self.assigned_values(scope, name)
            if before is None or v.lineno < before
        ]
        return (unassigned or bool(values)) and all(
            isinstance(v, ast.Call) and (any(q.startswith("torch.") for q in self.callee(v))
                                         or method_name(v) in _NEW_TENSOR_METHODS)
            for v in values
        )

    def _per_item(
        self, body: list[ast.AST], index: str, batch: str, arithmetic: bool = False,
        item: bool = False,
    ) -> bool:
        """The body indexes ``batch[index]`` (with ``item``, reads ``index``: the loop walks the
        tensor's items, ``for row in x``), runs a tensor op or a module on it (with
        ``arithmetic``, tensor arithmetic on the item counts: ``a[i] * b[i]``), reads nothing on
        the host and carries no state from one item to the next."""
        nodes = [n for stmt in body for n in ast.walk(stmt)]

        def is_item(n: ast.AST) -> bool:
            if item:
                return isinstance(n, ast.Name) and n.id == index
            return (isinstance(n, ast.Subscript) and dotted(n.value) == batch
                    and first_index(n.slice) == index)  # fmt: skip

        if not any(is_item(n) for n in nodes):
            return False
        calls = [n for n in nodes if isinstance(n, ast.Call)]
        if any(method_name(c) in HOST_COPY_METHODS for c in calls):
            return False
        linalg = [
            c for c in calls
            if self.callee(c) & BATCHED_LINALG.keys() or method_name(c) in BATCHED_LINALG_METHODS
        ]  # fmt: skip
        if linalg and not any(isinstance(n, ast.BinOp) for n in nodes) and all(
            c in linalg or method_name(c) in ("append", "extend") for c in calls
        ):
            return False  # the factorization is all the item's work: TD103 names it
        if any(
            q.startswith(("numpy.", "scipy.", "builtins.float", "builtins.int", "builtins.round"))
            for c in calls
            for q in self.callee(c)
        ):
            return False
        tensor_work = any(
            any(q.startswith("torch.") for q in self.callee(c))
            or (method_name(c) not in (None, "append", "extend"))
            or bool(MODEL_NAME.search((dotted(c.func) or "").rsplit(".", 1)[-1]))
            or self._tensor_function(c)
            for c in calls
        )
        if arithmetic and not tensor_work:
            tensor_work = any(
                isinstance(n, ast.BinOp)
                and any(is_item(side) for side in (n.left, n.right))
                for n in nodes
            )
        return tensor_work and not carries_state(body) and not ragged_items(body, nodes, self)

    def _tensor_function(self, call: ast.Call) -> bool:
        """``face_normals(verts[b], faces)``: a function of the file, or a module-level one
        of another file of the project (``from networks import scalar_to_support``), whose body
        runs torch ops (a ``torch.`` call) and reads nothing on the host."""
        function = same_file_callee(call) if isinstance(call.func, ast.Name) else None
        project = self.context.project
        if function is None and isinstance(call.func, ast.Name) and project is not None:
            function = project.module_function(call.func.id)
        if function is None:
            return False
        inner = [c for c in ast.walk(function) if isinstance(c, ast.Call)]
        return any(q.startswith("torch.") or method_name(c) in _TENSOR_METHODS
                   or (dotted(c.func) or "").startswith("torch.")  # (torch as the other file has it)
                   for c in inner for q in self.callee(c) or {""}) and not any(
            method_name(c) in HOST_COPY_METHODS for c in inner)  # fmt: skip

    # -- for loops ------------------------------------------------------------------------------
    def visit_For(self, node: ast.For) -> None:
        if not isinstance(node.target, ast.Name) or node.orelse:
            return
        scope = self.enclosing_scope(node)
        batch = self._batch_of(node.iter, scope) or sliced_parameter(node, self)
        item = batch is None and self._tensor_walked(node, scope)  # (for row in x)
        batch = node.iter.id if item else batch  # type: ignore[attr-defined]
        if batch is None and not self.is_training_body(node):
            # range(len(a)) over a parameter: a list as often as a tensor, so only when its
            # items go into a table made by torch (D[i, j] = (a[i] - b[j]).norm())
            name = len_of(node.iter)
            if name and self._made_by_torch(name, scope, unassigned=True):
                written = self._written_per_item(node, scope, name)
                if written is not None and self._per_item(
                    written[1], node.target.id, name, arithmetic=True
                ):
                    self._report(node, name, None, written=written[0])
            return
        if self.is_training_body(node):
            return
        appended = {
            dotted(c.func.value)  # type: ignore[attr-defined]
            for stmt in node.body
            for c in ast.walk(stmt)
            if isinstance(c, ast.Call) and method_name(c) == "append" and len(c.args) == 1
        } - {None}
        stacked = appended & self._stacked_after(node)
        if not item and not indexes_at(node, batch):  # (a tensor made from the batch that
            batch = derived_batch(self, node, scope, batch) or sized_alike(  # keeps its items,
                node, scope) or batch  # or a parameter of the same batch size)
        if stacked and self._per_item(node.body, node.target.id, batch, True, item):
            self._report(node, batch, sorted(stacked)[0])
            return
        if item:  # (no index to write items at; their sum is the one other shape)
            summed = summed_per_item(node)
            if summed is not None and self._per_item([ast.Expr(summed[1])], node.target.id,
                                                     batch, item=True):  # fmt: skip
                self._report(node, batch, None, summed=summed[0])
            return
        written = self._written_per_item(node, scope, batch)
        if written is not None:
            name, body = written
            if self._per_item(body, node.target.id, batch, arithmetic=True):
                self._report(node, batch, None, written=name)
                return
        summed = summed_per_item(node)
        if summed is not None and self._per_item([ast.Expr(summed[1])], node.target.id, batch):
            self._report(node, batch, None, summed=summed[0])

    def _tensor_walked(self, loop: ast.For, scope: ast.AST) -> bool:
        """``for row in x`` over a name every assignment of which before the loop is a torch
        call returning one tensor (not ``torch.load``, ``torch.split`` and other calls that
        return a sequence of them)."""
        name = loop.iter.id if isinstance(loop.iter, ast.Name) else None
        if name is None or not self._made_by_torch(name, scope, before=loop.lineno):
            return False
        return not any(
            self.callee(v) & _SEQUENCE_MAKERS or not any(map(_tensor_op, self.callee(v)))
            for v in self.assigned_values(scope, name) if isinstance(v, ast.Call)
        )  # fmt: skip

    def _written_per_item(
        self, loop: ast.For, scope: ast.AST, batch: str
    ) -> tuple[str, list] | None:
        """``(out, body)`` when the loop body is temporaries then ``out[i] = value`` (``out[b,
        i]`` in a loop over ``b``: a pairwise table) into one tensor made by torch before the
        loop, or the batch itself: the body as plain expressions (writing an item carries no
        state)."""
        index = loop.target.id  # type: ignore[attr-defined]
        names, steps = set(), []  # (temporaries kept as assignments, writes as their values)
        for stmt in loop.body:
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and _names(stmt.targets[0]) and stmt is not loop.body[-1]):
                steps.append(stmt)  # (a temporary of the item: d2 = ...; mu, cov = f(x[b]))
                continue  # fmt: skip
            written = inplace_on_item(stmt, index)  # (out[i].index_add_(0, idx[i], src[i]))
            if written is not None:
                names.add(written)
                steps.append(stmt)
                continue
            if not (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Subscript)
                and index in item_indices(stmt.targets[0].slice)  # (out[b, k]: pairwise loops)
            ):
                return None
            names.add(dotted(stmt.targets[0].value))
            steps.append(ast.Expr(stmt.value))
        if len(names) != 1 or None in names or carries_state(steps):
            return None  # (a temporary carried to the next item: a recurrence)
        body = [s if isinstance(s, ast.Expr) else ast.Expr(s.value) for s in steps]
        (name,) = names
        if name == batch:  # written back into the batch: sized by shape, never made otherwise
            made = sized_by_shape(loop.iter) and self._made_by_torch(  # (NumPy's is not)
                name, scope, before=loop.lineno, unassigned=True
            )
        else:  # a tensor made by torch before the loop (torch.zeros, torch.empty_like, ...)
            made = "." not in name and self._made_by_torch(name, scope, before=loop.lineno)
        return (name, body) if made else None

    def _stacked_after(self, loop: ast.For) -> set[str]:
        """Lists that torch.stack / torch.cat reads in a statement after ``loop`` (same
        block): ``torch.stack(out)``, or a field of each of its items
        (``torch.stack([p.values for p in peaks])``: topk's results kept whole)."""
        statements = statement_list(self.parent(loop), loop) or [loop]
        after = statements[next(i for i, s in enumerate(statements) if s is loop) + 1 :]
        out: set[str] = set()
        for stmt in after:
            for c in ast.walk(stmt):
                if isinstance(c, ast.Call) and self.callee(c) & _STACKS and c.args:
                    read = c.args[0]
                    if isinstance(read, (ast.ListComp, ast.GeneratorExp)) and len(
                            read.generators) == 1 and not read.generators[0].ifs:  # fmt: skip
                        read = read.generators[0].iter
                    name = dotted(read)
                    if name:
                        out.add(name)
        return out

    # -- torch.stack([f(x[i]) for i in range(...)]) ------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        if not (self.callee(node) & _STACKS and node.args):
            return
        comp = node.args[0]
        if not isinstance(comp, (ast.ListComp, ast.GeneratorExp)) or len(comp.generators) != 1:
            return
        gen = comp.generators[0]
        if not isinstance(gen.target, ast.Name) or gen.ifs:
            return
        batch = self._batch_of(gen.iter, self.enclosing_scope(node))
        if batch is None:
            return
        if self._per_item([comp.elt], gen.target.id, batch):
            self._report(node, batch, None)

    def _report(
        self, node: ast.AST, batch: str, stacked: str | None, written: str | None = None,
        summed: str | None = None,
    ) -> None:
        what = f"stacks `{stacked}`" if stacked else "stacks the results"
        if written:
            index = getattr(getattr(node, "target", None), "id", "i")
            what = f"writes each result into `{written}` at `{index}`"
            scatter = {m for c in ast.walk(node) if (m := method_name(c)) in _ROW_SCATTERS}
            if scatter:  # (cleanrl's C51 target projection: two index_add_ per row)
                what += (f" ({sorted(scatter)[0]} row by row is one "
                         f"`{written}.scatter_add_(1, index, src)` over every row)")  # fmt: skip
        if summed:  # (a loss summed over per-sample calls: reduction="sum" on the batch)
            what = f"sums the results into `{summed}`"
        covariance = any(
            isinstance(c, ast.Call) and self.callee(c) & {"torch.cov", "torch.corrcoef"}
            for c in ast.walk(node)
        )  # (torch.cov takes one matrix: the batched one is torchdoctor's)
        self.report(
            node,
            "TD304",
            f"a loop over the items of `{batch}` runs the same tensor ops on each and {what}: "
            + (
                f"torch.cov takes one matrix; torchdoctor.ops.covariance({batch}) computes "
                "every item's covariance (observations on dim -2) in one batched call"
                if covariance
                else f"run them on the whole batch at once (torch ops broadcast over the "
                f"leading dimension, modules take batches; torch.vmap(f)({batch}) for a "
                "per-item function)"
            )
            + ("; a loss summed over items is the batch's loss with reduction=\"sum\""
               if summed else "")
            + ": one launch per op instead of one per op and item",
        )


#: tensor methods that mark a helper's work as tensor work (Swin's per-image window partition:
#: ``img.view(...).permute(...)``, then ``.reshape(...)``; a stereo D1 error: ``(p - g).abs()``,
#: ``.clamp(min=1)``: methods a numpy array does not have)
_TENSOR_METHODS = frozenset({"view", "reshape", "permute", "transpose", "flatten", "unflatten",
                             "contiguous", "matmul", "softmax", "unfold", "masked_fill", "abs",
                             "clamp", "clamp_min", "exp", "log", "sqrt", "sigmoid", "norm"})  # fmt: skip


def _names(target: ast.AST) -> bool:
    """``d2`` or ``mu, cov``: a target binding plain names only."""
    if isinstance(target, ast.Tuple):
        return bool(target.elts) and all(isinstance(e, ast.Name) for e in target.elts)
    return isinstance(target, ast.Name)


def _tensor_op(qualified: str) -> bool:
    """A torch function that returns a tensor (``torch.randn``, ``torch.nn.functional.pad``),
    not a class (``torch.utils.data.DataLoader``, ``torch.nn.Linear``) or a utility namespace.

    Example:
        >>> _tensor_op("torch.randn"), _tensor_op("torch.utils.data.DataLoader")
        (True, False)
    """
    last = qualified.rsplit(".", 1)[-1]
    return (qualified.startswith("torch.") and not last[:1].isupper()
            and not qualified.startswith(_NOT_TENSOR_OPS))  # fmt: skip

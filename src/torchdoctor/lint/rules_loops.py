"""TD3xx: loops that a single vectorized op replaces (seeds 000, 002, 003)."""

from __future__ import annotations

import ast

from torchdoctor.lint.label_loops import first_seen_ids_loop, keyed_by_rows
from torchdoctor.lint.loop_shapes import (
    TENSOR_FROM_LIST,
    compared_per_sample,
    equality_sides,
    lookup_container,
    made_by_numpy,
    mapping_remap_loop,
    per_label_lookup,
    remap_loop_parts,
)
from torchdoctor.lint.mask_names import copied_as_array, counted_mask, loop_assignment
from torchdoctor.lint.remap_fix import plan_remap_fix, remap_rewrite
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import (
    COMPREHENSIONS,
    FOR,
    RuleVisitor,
    dotted,
    dotted_names_in,
    has_host_copy,
    keyword,
    method_name,
    positional,
    target_names,
)

LSA = frozenset(
    {"scipy.optimize.linear_sum_assignment", "scipy.optimize._lsap.linear_sum_assignment",
     "lap.lapjv", "lap.lapmod", "lapjv.lapjv", "lapsolver.solve_dense"}  # (the other solvers)
)  # fmt: skip
UNIQUE_HOST = frozenset({"numpy.unique"})
#: counting a mask: ``(x == v).sum()``, ``torch.count_nonzero(x == v)``
_COUNTS = frozenset({"sum", "count_nonzero"})
_COUNT_CALLS = frozenset({"torch.sum", "torch.count_nonzero"})


_IMPORTS_TORCH = r"(?m)^\s*(?:import|from)\s+torch\b"


#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).
RULES = (
    Rule(
        "TD301",
        "mask-per-value-in-loop",
        "warning",
        "torch.where(x == v) / (x == v).nonzero() / x[x == v] inside a loop over values, or "
        "torch.where(M[i]) of one row per iteration (Mixtral's loop over experts); also a "
        "count per value, (x == v).sum() (one full pass per value)",
        "group once: argsort + counts (torch.unique_consecutive / split) and iterate the groups; "
        "count every value in one pass with torch.bincount(x, minlength=n)",
        "for s in range(n_seg):\n    idx = torch.where(seg == s)[0]",
        "groups = torchdoctor.ops.group_by_segment(seg, n_seg)",
        "torchdoctor.ops.group_by_segment",
        seed="003",
        explains=("TD207",),  # (the data-dependent shape of each value's mask: its cost)
    ),
    Rule(
        "TD302",
        "python-label-remap",
        "warning",
        "label remapping through Python containers or a loop over labels",
        "torch.unique(labels, return_inverse=True) remaps in one on-device op; --fix rewrites "
        "the exact `u = torch.unique(y); r = torch.zeros_like(y); for i, v in enumerate(u): "
        "r[y == v] = i` idiom",
        "u = sorted(set(y.tolist()))\nm = {v: i for i, v in enumerate(u)}",
        "_, y = torch.unique(y, return_inverse=True)",
        "torchdoctor.ops.remap_labels",
        autofix=True,
        seed="002",
        explains=("TD201", "TD205"),
    ),
    Rule(
        "TD303",
        "scipy-assignment-on-tensor",
        "warning",
        "scipy.optimize.linear_sum_assignment on tensor data copied to the host",
        "solve the assignment batched on the device (greedy/Sinkhorn/auction)",
        "r, c = linear_sum_assignment(-sim.detach().cpu().numpy())",
        "cols = torchdoctor.ops.linear_assignment(-sim)",
        "torchdoctor.ops.linear_assignment",
        seed="000",
        explains=("TD201", "TD205"),
    ),
)


class LoopRules(RuleVisitor):
    """TD301 mask per value in a loop; TD302 label remap through Python; TD303 scipy
    linear_sum_assignment on tensor data.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = "import torch\\nfor v in torch.unique(labels):\\n    out.append(x[labels == v])\\n"
        >>> [f.code for f in lint_source(src)], "TD303" in LoopRules.CODES
        (['TD301'], True)
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    # Only files that use torch: the same loops over NumPy arrays or pandas frames are theirs.
    TRIGGERS = (
        (
            _IMPORTS_TORCH,
            r"where\(|nonzero|argwhere|masked_select|\.eq\(|\[(?:[^\[\]\n]|\[[^\]\n]*\])*==|"
            r"linear_sum_assignment|\n[ \t]*\w+[ \t]*=[ \t]*[\w.]+(\[[^\]\n]*\])?[ \t]*==[^=]|"
            # (x[batch[:, 1] == r]: a subscript inside the mask; sel = batch == g on its own line)
            r"==[^=\n]*\)\.(sum|count_nonzero)\(",
        ),
        (_IMPORTS_TORCH, "enumerate", r"tolist|cpu\(|numpy\("),
        (_IMPORTS_TORCH, r"len\(", r"tolist|cpu\(|numpy\("),  # (ids[v] = len(ids) per label)
        (_IMPORTS_TORCH, r"(?:tensor|LongTensor)\(\s*\[\w[\w.]*(?:\[|\.get\()"),  # [m[int(v)] ...]
        (_IMPORTS_TORCH, r"\[\w[\w.]*(?:\[|\.get\()[^\n]*\bfor\b[^\n]*\.tolist\(\)"),  # (a list)
    )

    # -- TD301 ---------------------------------------------------------------------------------
    def _mask_loop(
        self, node: ast.AST, mask: ast.AST, seen: frozenset = frozenset()
    ) -> ast.AST | None:
        """The loop whose variable is compared in ``mask`` (``x == v``), if any."""
        loops = self.enclosing_loops(node)
        if not loops:
            return None
        if isinstance(mask, ast.Name):  # m = x == v; torch.where(m)
            if mask.id in seen:  # (done = done | stop: a name followed once)
                return None
            seen = seen | {mask.id}
            mask = loop_assignment(loops[0], mask.id) or mask
        if isinstance(mask, ast.BinOp) and isinstance(mask.op, ast.BitAnd | ast.BitOr):
            # ((pred == c) & (target == c)).sum(): a per-class IoU's masks, one pass per class
            return self._mask_loop(node, mask.left, seen) or self._mask_loop(node, mask.right, seen)
        sides = equality_sides(mask)
        if sides is None:
            return None
        data, value = sides
        for loop in loops:
            targets = self.loop_targets(loop)
            for a, b in ((data, value), (value, data)):
                if set(dotted_names_in(b)) & targets and self.is_invariant(a, loop):
                    if self.skip_mask(a, b, loop):
                        continue
                    return loop
        return None

    skip_mask = staticmethod(compared_per_sample)

    def _check_mask(self, node: ast.AST, mask: ast.AST, what: str, row: bool = False) -> None:
        scope = self.enclosing_scope(node)
        if made_by_numpy(mask, self, scope) or isinstance(node, ast.Subscript) and (
                made_by_numpy(node.value, self, scope) or copied_as_array(node, self.parent)):
            return  # (NumPy arrays on the host: no device, no sync)
        if self._mask_loop(node, mask) is not None:
            self.report(
                node,
                "TD301",
                f"{what} inside a loop over values: one full pass and one host sync per value; "
                "group once (argsort + counts, then split) with torchdoctor.ops.group_by_segment",
            )
        elif row and self._row_loop(node, mask) is not None:
            self.report(
                node,
                "TD301",
                f"{what} takes the nonzero positions of one row of `{self.code_of(mask.value)}` "  # type: ignore[attr-defined]
                "per iteration (a MoE loop over experts, a loop over samples): one host sync "
                "per row; take them once for the whole tensor (torch.nonzero, sorted by row) "
                "and split by each row's count, or sort by the row index with "
                "torchdoctor.ops.group_by_segment",
            )

    def _row_loop(self, node: ast.AST, mask: ast.AST) -> ast.AST | None:
        """The loop over ``i`` when ``mask`` is ``M[i]`` of a loop-invariant tensor ``M``: a
        tensor made by a call in this function (``F.one_hot(...).permute(...)``: Mixtral's
        ``expert_mask``), or one whose rows the loop counts (``range(M.shape[0])``)."""
        if not isinstance(mask, ast.Subscript) or isinstance(mask.slice, (ast.Slice, ast.Tuple)):
            return None
        base = dotted(mask.value)
        if base is None:
            return None
        scope = self.enclosing_scope(node)
        made = self.assigned_values(scope, base) if "." not in base else []
        for loop in self.enclosing_loops(node):
            if not isinstance(loop, ast.For) or not self.is_invariant(mask.value, loop):
                continue
            if not set(dotted_names_in(mask.slice)) & self.loop_targets(loop):
                continue
            header = self.code_of(loop.iter)
            counts_rows = header.startswith("range(") and (
                f"{base}.shape[0]" in header or f"{base}.size(0)" in header
            )
            if counts_rows or (made and all(isinstance(v, ast.Call) for v in made)):
                return loop
        return None

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.slice, ast.Tuple):  # emb[:, ids == v]: a mask along another dim
            rest = [e for e in node.slice.elts if not _whole_dim(e) and not _column(e)]
            if len(rest) == 1 and equality_sides(rest[0]) is not None:
                self._check_mask(node, rest[0], f"boolean-mask indexing `{self.code_of(node)}`")
            return
        if isinstance(node.slice, ast.Slice):
            return
        parent = self.parent(node)
        if isinstance(parent, ast.Assign) and any(t is node for t in parent.targets):
            loop = self.parent(parent)
            if remap_loop_parts(loop, self.context.lines) is not None:
                return  # reported as TD302
            if mapping_remap_loop(loop) is not None:
                return  # ... as well
        self._check_mask(node, node.slice, f"boolean-mask indexing `{self.code_of(node)}`")

    # -- calls ---------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        args = positional(node)
        n_args = len(node.args) + len(node.keywords)
        if "torch.where" in names and n_args == 1 and args:
            self._check_mask(node, args[0], f"`{self.code_of(node)}`", row=True)
        elif names & {"torch.nonzero", "torch.argwhere"} and args:
            self._check_mask(node, args[0], f"`{self.code_of(node)}`", row=True)
        elif "torch.masked_select" in names and len(args) == 2:
            self._check_mask(node, args[1], f"`{self.code_of(node)}`")
        elif method_name(node) in {"nonzero", "argwhere"} and not names & {"torch.nonzero"}:
            self._check_mask(node, node.func.value, f"`{self.code_of(node)}`", row=True)
        elif (method_name(node) in _COUNTS and not node.args and not names & _COUNT_CALLS) or (
            names & _COUNT_CALLS and len(args) == 1 and n_args == 1
        ):
            mask = counted_mask(args[0] if names & _COUNT_CALLS else node.func.value)  # type: ignore[attr-defined]
            if self._mask_loop(node, mask) is not None:
                how = ("torch.bincount(x, minlength=n) counts every value in one pass "
                       "(torch.unique(x, return_counts=True) for values that are not 0..n-1)")
                if isinstance(mask, ast.BinOp):  # (a per-class intersection or union)
                    how = ("every class at once: intersection = torch.bincount(pred[pred == "
                           "target], minlength=n), union = torch.bincount(pred, minlength=n) "
                           "+ torch.bincount(target, minlength=n) - intersection")
                self.report(node, "TD301", f"counting `{self.code_of(mask)}` inside a loop "
                            f"over values: one full pass per value; {how}")  # fmt: skip
        if names & LSA and any(
            self._from_tensor(a, node) for a in [*node.args, *(k.value for k in node.keywords)]
        ):
            solver = min(names & LSA)
            solver = "scipy linear_sum_assignment" if solver.startswith("scipy") else solver
            self.report(
                node,
                "TD303",
                f"{solver} on tensor data copied to the host (a sync and a serial CPU solve per "
                "call): use batched on-device assignment torchdoctor.ops.linear_assignment",
            )
        if "builtins.set" in names or names & UNIQUE_HOST:
            self._check_python_unique(node)
        listed = args[0] if names & TENSOR_FROM_LIST and args and isinstance(args[0], ast.Name) else None
        made = self.assigned_values(self.enclosing_scope(node), listed.id) if listed else []
        if len(made) == 1 and isinstance(made[0], ast.ListComp):
            args = [made[0]]  # (idx = [m[a] for a in z.tolist()]; torch.tensor(idx): reported
        else:  # at the list, whose .tolist() it explains)
            listed = None
        if names & TENSOR_FROM_LIST and args and isinstance(args[0], ast.ListComp):
            lookup = per_label_lookup(args[0])
            built = () if lookup is None else self.assigned_values(
                self.enclosing_scope(node), dotted(lookup_container(lookup)) or "")  # fmt: skip
            scope = self.enclosing_scope(node)
            if lookup is not None and not any(  # (a dict of the labels' own values: told there)
                isinstance(v, ast.DictComp)
                and any(self.has_host_copy_resolved(g.iter, scope) for g in v.generators)
                for v in built
            ):
                self.report(args[0] if listed else node, "TD302", self._remap_message(
                    f"a Python lookup per label (`{self.code_of(lookup)}`: a host read per "
                    "element, or a .tolist() copy, and a Python loop); with a mapping that is "
                    "not 0..n-1, build a lookup tensor once (`lut[keys] = values`) and index it "
                    "with the labels on the device"))  # fmt: skip
        if "builtins.enumerate" in names and args and (has_host_copy(args[0]) or self.has_host_copy_resolved(
                args[0], self.enclosing_scope(node))) and not self._python_unique_named(args[0], node):
            comp = self.parent(node)
            dict_ = self.parent(comp) if isinstance(comp, ast.comprehension) else None
            if isinstance(dict_, ast.DictComp) and not keyed_by_rows(dict_):
                self.report(
                    self.parent(comp), "TD302", self._remap_message("a dict built from .tolist()")
                )

    def _python_unique_named(self, expr: ast.AST, call: ast.Call) -> bool:
        """``u = sorted(set(y.tolist()))`` before ``enumerate(u)``, or in it: the set is reported."""
        scope = self.enclosing_scope(call)
        return any(isinstance(c, ast.Call) and self.callee(c) & ({"builtins.set"} | UNIQUE_HOST)
                   for v in [expr, *(v for n in dotted_names_in(expr)
                                     for v in self.assigned_values(scope, n))]
                   for c in ast.walk(v))  # fmt: skip

    def _from_tensor(self, expr: ast.AST, call: ast.Call) -> bool:
        if any(method_name(c) == "detach" for c in ast.walk(expr) if isinstance(c, ast.Call)):
            return True
        scope = self.enclosing_scope(call)
        if self.has_host_copy_resolved(expr, scope):
            return True
        # DETR's matcher: [linear_sum_assignment(c[i]) for i, c in enumerate(C.split(...))]
        # with C = (...).cpu(): a loop variable drawn from host-copied tensor data.
        names = {n.split(".")[0] for n in dotted_names_in(expr)}
        for iterable, bound in self._loop_sources(call):
            if not names & bound:
                continue
            if has_host_copy(iterable):
                return True
            bases = {n.split(".")[0] for n in dotted_names_in(iterable)}  # C of C.split(...)
            if any(has_host_copy(v) for b in bases for v in self.assigned_values(scope, b)):
                return True
        return False

    def _loop_sources(self, node: ast.AST):
        """``(iterable, names it binds)`` of every for loop / comprehension around ``node``."""
        parent = self.parent(node)
        while parent is not None:
            if isinstance(parent, FOR):
                yield parent.iter, target_names(parent.target)
            elif isinstance(parent, COMPREHENSIONS):
                for comp in parent.generators:
                    yield comp.iter, target_names(comp.target)
            parent = self.parent(parent)

    @staticmethod
    def _remap_message(what: str) -> str:
        return (
            f"label remapping through {what}: torch.unique(labels, return_inverse=True) does it "
            "in one on-device op (torchdoctor.ops.remap_labels)"
        )

    def _check_python_unique(self, call: ast.Call) -> None:
        inverse = keyword(call, "return_inverse")
        if (call.args and isinstance(inverse, ast.Constant) and inverse.value is True
                and self.has_host_copy_resolved(call.args[0], self.enclosing_scope(call))):
            what = "np.unique(..., return_inverse=True) of a host copy (a sync, and a sort on the CPU)"
            self.report(call, "TD302", self._remap_message(what))  # fmt: skip
            return
        if len(call.args) + len(call.keywords) != 1 or not call.args:
            return
        if not self.has_host_copy_resolved(call.args[0], self.enclosing_scope(call)):
            return
        outer: ast.AST = call
        parent = self.parent(call)
        while (isinstance(parent, ast.Call) and outer in parent.args) or (
                isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.BitOr)):  # fmt: skip
            if isinstance(parent, ast.BinOp) or self.callee(parent) & {
                    "builtins.sorted", "builtins.list", "builtins.tuple"}:  # (set(a) | set(b))
                outer, parent = parent, self.parent(parent)
            else:
                break
        done = self.context.cache.setdefault(("TD302 unique",), set())
        if id(outer) in done:
            return  # (the other side of a union of sets: one finding)
        done.add(id(outer))
        used_for_mapping = False
        if isinstance(parent, ast.Call) and outer in parent.args:
            used_for_mapping = "builtins.enumerate" in self.callee(parent)
        elif isinstance(parent, ast.Assign) and len(parent.targets) == 1:
            target = parent.targets[0]
            if isinstance(target, ast.Name):
                scope = self.enclosing_scope(call)
                used_for_mapping = any(
                    isinstance(n, ast.Call)
                    and (
                        (
                            isinstance(n.func, ast.Name)
                            and n.func.id == "enumerate"
                            and len(n.args) == 1
                            and not n.keywords
                            and isinstance(n.args[0], ast.Name)
                            and n.args[0].id == target.id
                        )
                        or (
                            isinstance(n.func, ast.Attribute)
                            and n.func.attr == "index"
                            and isinstance(n.func.value, ast.Name)
                            and n.func.value.id == target.id
                        )
                    )
                    for n in ast.walk(scope)
                )
        if used_for_mapping:
            self.report(outer, "TD302", self._remap_message(f"`{self.code_of(outer)}`"),
                        pattern_lines=self._remap_span(outer))  # fmt: skip

    def _remap_span(self, start: ast.AST) -> tuple[int, int] | None:
        """The lines from a remap's host unique (``start``) to the tensor its dict builds
        (``torch.tensor([m[v] for v in y.tolist()])`` later in the function, left to this
        finding): the pattern a profile measures, and where its `.tolist()` is its own."""
        first = getattr(start, "lineno", 0)
        last = first
        for node in ast.walk(self.enclosing_scope(start)):
            if (isinstance(node, ast.Call) and self.callee(node) & TENSOR_FROM_LIST and node.args
                    and isinstance(node.args[0], ast.ListComp) and node.lineno > first):
                lookup = per_label_lookup(node.args[0])
                built = () if lookup is None else self.assigned_values(
                    self.enclosing_scope(node), dotted(lookup_container(lookup)) or "")
                if any(isinstance(v, ast.DictComp) for v in built):
                    last = max(last, node.end_lineno or node.lineno)
        return (first, last) if last > first else None

    # -- TD302: for i, v in enumerate(u): y[x == v] = i ------------------------------------------
    def visit_For(self, node: ast.For) -> None:
        first_seen = first_seen_ids_loop(node)
        if first_seen is not None and self.has_host_copy_resolved(node.iter, self.enclosing_scope(node)):
            self.report(node, "TD302", self._remap_message(  # (ids[v] = len(ids) per label)
                f"a loop over every label numbering the new ones (`{self.code_of(first_seen)}`)"))
        parts = remap_loop_parts(node, self.context.lines)
        mapped = mapping_remap_loop(node) if parts is None else None
        if mapped is not None:
            target, mapping = mapped
            self.report(node, "TD302", (
                f"label remapping through a loop over the entries of `{self.code_of(mapping)}` "
                f"(`{self.code_of(target)} = ...`): one full pass and one masked write per "
                "entry; build a lookup tensor once (`lut = torch.full((max_id + 1,), fill); "
                "lut[keys] = values`, keys and values from the mapping) and index it with the "
                "labels: one gather on the device"))  # fmt: skip
        if parts is None:
            return
        plan = plan_remap_fix(self, node)
        self.report(
            node,
            "TD302",
            self._remap_message(
                f"a loop over labels (`{parts[3]}[... == {parts[1]}] = {parts[0]}`)"
            ),
            fix=None if plan is None else remap_rewrite(*plan),
            fix_kind="block",
        )


def _column(index: ast.AST) -> bool:
    """An int or a slice beside a mask (``edges[edges[:, 0] == u, 1]``: a column of its rows)."""
    if isinstance(index, ast.Constant):
        return type(index.value) is int
    return isinstance(index, ast.Slice)


def _whole_dim(index: ast.AST) -> bool:
    """``:`` or ``...`` in a subscript: a whole dimension.

    Example:
        >>> [_whole_dim(e) for e in ast.parse("x[:, ..., 1:2]", mode="eval").body.slice.elts]
        [True, True, False]
    """
    if isinstance(index, ast.Constant) and index.value is Ellipsis:
        return True
    return isinstance(index, ast.Slice) and index.lower is index.upper is index.step is None

"""TD3xx: loops that a single vectorized op replaces (seeds 000, 002, 003)."""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from torchdoctor.lint.visitor import (
    COMPREHENSIONS,
    RuleVisitor,
    code_of,
    dotted_names_in,
    has_host_copy,
    method_name,
    target_names,
)

LSA = frozenset(
    {"scipy.optimize.linear_sum_assignment", "scipy.optimize._lsap.linear_sum_assignment"}
)
UNIQUE_HOST = frozenset({"numpy.unique"})


def equality_sides(
    expr: cst.BaseExpression,
) -> tuple[cst.BaseExpression, cst.BaseExpression] | None:
    """``(x, v)`` for ``x == v`` or ``x.eq(v)``; None otherwise."""
    if isinstance(expr, cst.Comparison) and len(expr.comparisons) == 1:
        target = expr.comparisons[0]
        if isinstance(target.operator, cst.Equal):
            return expr.left, target.comparator
    if isinstance(expr, cst.Call) and method_name(expr) == "eq" and len(expr.args) == 1:
        return expr.func.value, expr.args[0].value
    return None


def remap_loop_parts(node: cst.For) -> tuple[str, str, str, str, str] | None:
    """For ``for I, V in enumerate(U): Y[L == V] = I`` return ``(I, V, U, Y, L)`` as text."""
    if not (isinstance(node.target, cst.Tuple) and len(node.target.elements) == 2):
        return None
    index, value = (e.value for e in node.target.elements)
    it = node.iter
    if not (isinstance(index, cst.Name) and isinstance(value, cst.Name)):
        return None
    if not (
        isinstance(it, cst.Call)
        and isinstance(it.func, cst.Name)
        and it.func.value == "enumerate"
        and len(it.args) == 1
    ):
        return None
    body = node.body.body if isinstance(node.body, cst.IndentedBlock) else []
    if len(body) != 1 or not isinstance(body[0], cst.SimpleStatementLine):
        return None
    stmt = body[0].body[0] if len(body[0].body) == 1 else None
    if not (isinstance(stmt, cst.Assign) and len(stmt.targets) == 1):
        return None
    target = stmt.targets[0].target
    if not (isinstance(stmt.value, cst.Name) and stmt.value.value == index.value):
        return None
    if not (isinstance(target, cst.Subscript) and len(target.slice) == 1):
        return None
    element = target.slice[0].slice
    sides = equality_sides(element.value) if isinstance(element, cst.Index) else None
    if sides is None or not (isinstance(sides[1], cst.Name) and sides[1].value == value.value):
        return None
    return (
        index.value,
        value.value,
        code_of(it.args[0].value),
        code_of(target.value),
        code_of(sides[0]),
    )


_IMPORTS_TORCH = r"(?m)^\s*(?:import|from)\s+torch\b"


class LoopRules(RuleVisitor):
    """TD301 mask per value in a loop; TD302 label remap through Python; TD303 scipy
    linear_sum_assignment on tensor data."""

    CODES = ("TD301", "TD302", "TD303")
    # Only files that use torch: the same loops over NumPy arrays or pandas frames are theirs.
    TRIGGERS = (
        (
            _IMPORTS_TORCH,
            r"where\(|nonzero|argwhere|masked_select|\.eq\(|\[[^\]\n]*==|linear_sum_assignment",
        ),
        (_IMPORTS_TORCH, "enumerate", r"tolist|cpu\(|numpy\("),
    )

    # -- TD301 ---------------------------------------------------------------------------------
    def _mask_loop(self, node: cst.CSTNode, mask: cst.BaseExpression) -> cst.CSTNode | None:
        """The loop whose variable is compared in ``mask`` (``x == v``), if any."""
        loops = self.enclosing_loops(node)
        if not loops:
            return None
        if isinstance(mask, cst.Name):  # m = x == v; torch.where(m)
            for assign in m.findall(
                loops[0], m.Assign(targets=[m.AssignTarget(m.Name(mask.value))])
            ):
                mask = assign.value
                break
        sides = equality_sides(mask)
        if sides is None:
            return None
        data, value = sides
        for loop in loops:
            targets = self.loop_targets(loop)
            for a, b in ((data, value), (value, data)):
                if set(dotted_names_in(b)) & targets and self.is_invariant(a, loop):
                    return loop
        return None

    def _check_mask(self, node: cst.CSTNode, mask: cst.BaseExpression, what: str) -> None:
        if self._mask_loop(node, mask) is not None:
            self.report(
                node,
                "TD301",
                f"{what} inside a loop over values: one full pass and one host sync per value; "
                "group once (argsort + counts, then split) with torchdoctor.ops.group_by_segment",
            )

    def visit_Subscript(self, node: cst.Subscript) -> None:
        if len(node.slice) != 1 or not isinstance(node.slice[0].slice, cst.Index):
            return
        parent = self.parent(node)
        if isinstance(parent, cst.AssignTarget):
            loop = self.parent(self.parent(self.parent(self.parent(parent))))
            if isinstance(loop, cst.For) and remap_loop_parts(loop) is not None:
                return  # reported as TD302
        self._check_mask(
            node, node.slice[0].slice.value, f"boolean-mask indexing `{code_of(node)}`"
        )

    # -- calls ---------------------------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        names = self.callee(node)
        positional = [a.value for a in node.args if a.keyword is None and not a.star]
        if "torch.where" in names and len(node.args) == 1 and positional:
            self._check_mask(node, positional[0], f"`{code_of(node)}`")
        elif names & {"torch.nonzero", "torch.argwhere"} and positional:
            self._check_mask(node, positional[0], f"`{code_of(node)}`")
        elif "torch.masked_select" in names and len(positional) == 2:
            self._check_mask(node, positional[1], f"`{code_of(node)}`")
        elif method_name(node) in {"nonzero", "argwhere"} and not names & {"torch.nonzero"}:
            self._check_mask(node, node.func.value, f"`{code_of(node)}`")
        if names & LSA and any(self._from_tensor(a.value, node) for a in node.args):
            self.report(
                node,
                "TD303",
                "scipy linear_sum_assignment on tensor data copied to the host (a sync and a "
                "serial CPU solve per call): use batched on-device assignment "
                "torchdoctor.ops.linear_assignment",
            )
        if "builtins.set" in names or names & UNIQUE_HOST:
            self._check_python_unique(node)
        if "builtins.enumerate" in names and positional and has_host_copy(positional[0]):
            comp = self.parent(node)
            if isinstance(comp, cst.CompFor) and isinstance(self.parent(comp), cst.DictComp):
                self.report(
                    self.parent(comp), "TD302", self._remap_message("a dict built from .tolist()")
                )

    def _from_tensor(self, expr: cst.BaseExpression, call: cst.Call) -> bool:
        if any(method_name(c) == "detach" for c in m.findall(expr, m.Call())):
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

    def _loop_sources(self, node: cst.CSTNode):
        """``(iterable, names it binds)`` of every for loop / comprehension around ``node``."""
        parent = self.parent(node)
        while parent is not None:
            if isinstance(parent, cst.For):
                yield parent.iter, target_names(parent.target)
            elif isinstance(parent, COMPREHENSIONS):
                comp = parent.for_in
                while comp is not None:
                    yield comp.iter, target_names(comp.target)
                    comp = comp.inner_for_in
            parent = self.parent(parent)

    @staticmethod
    def _remap_message(what: str) -> str:
        return (
            f"label remapping through {what}: torch.unique(labels, return_inverse=True) does it "
            "in one on-device op (torchdoctor.ops.remap_labels)"
        )

    def _check_python_unique(self, call: cst.Call) -> None:
        if len(call.args) != 1 or not self.has_host_copy_resolved(
            call.args[0].value, self.enclosing_scope(call)
        ):
            return
        outer: cst.CSTNode = call
        parent = self.parent(call)
        while isinstance(parent, cst.Arg):
            wrapper = self.parent(parent)
            if isinstance(wrapper, cst.Call) and self.callee(wrapper) & {
                "builtins.sorted",
                "builtins.list",
                "builtins.tuple",
            }:
                outer, parent = wrapper, self.parent(wrapper)
            else:
                break
        used_for_mapping = False
        if isinstance(parent, cst.Arg):
            wrapper = self.parent(parent)
            used_for_mapping = isinstance(
                wrapper, cst.Call
            ) and "builtins.enumerate" in self.callee(wrapper)
        elif isinstance(parent, cst.Assign) and len(parent.targets) == 1:
            target = parent.targets[0].target
            if isinstance(target, cst.Name):
                scope = self.enclosing_scope(call)
                used_for_mapping = bool(
                    m.findall(
                        scope, m.Call(func=m.Name("enumerate"), args=[m.Arg(m.Name(target.value))])
                    )
                    or m.findall(
                        scope, m.Call(func=m.Attribute(m.Name(target.value), m.Name("index")))
                    )
                )
        if used_for_mapping:
            self.report(outer, "TD302", self._remap_message(f"`{code_of(outer)}`"))

    # -- TD302: for i, v in enumerate(u): y[x == v] = i ------------------------------------------
    def visit_For(self, node: cst.For) -> None:
        parts = remap_loop_parts(node)
        if parts is None:
            return
        from torchdoctor.lint.fixes import remap_fix_applies

        self.report(
            node,
            "TD302",
            self._remap_message(
                f"a loop over labels (`{parts[3]}[... == {parts[1]}] = {parts[0]}`)"
            ),
            fixable=remap_fix_applies(node, self.parent(node), self.qualified_names),
        )

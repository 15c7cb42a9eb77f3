"""TD514: graph attention computed densely, over every pair of nodes, masked by the adjacency.

pytorch/examples' GAT (and pyGAT, and many ports of it) scores all N x N pairs of nodes, sets
the pairs that are no edge to a large negative number with ``torch.where(adj > 0, e, -9e15)``
(or ``e.masked_fill(adj == 0, float("-inf"))``) and softmaxes each row: on Cora, 0.2% of the
pairs are edges, so nearly all of the scores, the softmax and their backward are work on pairs
that get zero weight, and an N x N tensor per head is kept for the backward. Scoring the edges
only and normalising them per node (``torchdoctor.ops.edge_softmax``, or PyG's ``GATConv``) does
the same layer in the edges' time: 1,323 -> 13.6 ms forward + backward at Cora's size
(BENCHMARKS.md, suite ``ops``, ``ops_graphs``); the example's real bottleneck in a client run.

Reported: a ``torch.where`` or ``masked_fill`` whose condition is an adjacency matrix (a name
whose words include ``adj`` / ``adjacency``: ``adj``, ``adj_mat``, ``self.adjacency``; compared
with a number, negated, cast to bool, or bare) and whose result (directly, or through the name it
is assigned to in the same function) is softmaxed there. Not reported: a mask named otherwise (a
causal or padding mask in a transformer: SDPA's business, TD507), an adjacency used without a
softmax (a GCN's ``adj @ x``, degree normalisation), a softmax in another function.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.call_index import calls_named
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import RuleVisitor, method_name

RULES = (
    Rule(
        "TD514",
        "dense-graph-attention",
        "warning",
        "graph attention over every pair of nodes: scores masked by the adjacency matrix "
        "(torch.where(adj > 0, e, -9e15), masked_fill(adj == 0, -inf)) then softmaxed, so "
        "the N x N scores, their softmax and its backward are computed and kept where the "
        "graph has a few edges per node",
        "score the edges only (rows, cols = adj.nonzero(as_tuple=True), once) and normalise "
        "them per node with torchdoctor.ops.edge_softmax, or use PyG's GATConv: a GAT layer "
        "at Cora's size went 1,323 -> 13.6 ms forward + backward (small dense graphs, a batch "
        "of molecules, are faster dense)",
        "e = leaky_relu(s + t.mT)                       # (heads, N, N)\n"
        "e = torch.where(adj > 0, e, -9e15 * torch.ones_like(e))\n"
        "out = torch.softmax(e, dim=-1) @ h",
        "rows, cols = adj.nonzero(as_tuple=True)        # once: the graph is fixed\n"
        "e = leaky_relu(s[:, rows] + t[:, cols])        # (heads, edges)\n"
        "a = torchdoctor.ops.edge_softmax(e, rows, num_nodes=N, dim=-1)\n"
        "out = torch.zeros_like(h).index_add_(1, rows, a.unsqueeze(-1) * h[:, cols])",
        replacement="torchdoctor.ops.edge_softmax",
    ),
)

#: the words of a name that say it is an adjacency matrix (``adj_mat`` -> adj, mat)
_ADJACENCY_WORDS = frozenset({"adj", "adjacency", "adjmat", "adjmatrix"})
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SOFTMAX = frozenset({"torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax"})
#: what keeps a mask a mask: ``adj.bool()``, ``adj.to_dense()``, ``(adj > 0).float()``
_MASK_METHODS = frozenset({"bool", "to_dense", "float", "byte", "long", "int", "logical_not"})
#: what broadcasts it over heads or a batch: ``adj.unsqueeze(-1)``, ``adj.expand(B, H, N, N)``
_SHAPE_METHODS = frozenset({"unsqueeze", "view", "reshape", "expand", "expand_as", "repeat",
                            "permute", "transpose", "squeeze"})  # fmt: skip


def _adjacency_name(node: ast.AST) -> str | None:
    """The adjacency a mask expression is built from (``adj`` of ``adj > 0``, ``~adj.bool()``,
    ``self.adj_mat == 0``, ``adj[batch]``), or None.

    Example:
        >>> _adjacency_name(ast.parse("self.adj_mat > 0", mode="eval").body)
        'self.adj_mat'
        >>> _adjacency_name(ast.parse("adj.unsqueeze(1) == 0", mode="eval").body)
        'adj'
        >>> _adjacency_name(ast.parse("causal_mask == 0", mode="eval").body) is None
        True
    """
    if isinstance(node, ast.Compare) and len(node.comparators) == 1:
        left, right = node.left, node.comparators[0]
        if isinstance(right, ast.Constant) and isinstance(right.value, (int, float)):
            return _adjacency_name(left)
        if isinstance(left, ast.Constant) and isinstance(left.value, (int, float)):
            return _adjacency_name(right)
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
        return _adjacency_name(node.operand)
    if isinstance(node, ast.Call) and not node.args and method_name(node) in _MASK_METHODS:
        return _adjacency_name(node.func.value)  # type: ignore[attr-defined]
    if isinstance(node, ast.Call) and method_name(node) in _SHAPE_METHODS:
        return _adjacency_name(node.func.value)  # type: ignore[attr-defined]  # (over heads)
    if isinstance(node, ast.Subscript):
        return _adjacency_name(node.value)
    if isinstance(node, (ast.Name, ast.Attribute)):
        last = node.id if isinstance(node, ast.Name) else node.attr
        words = {w.lower() for w in _WORDS.findall(last)}
        if words & _ADJACENCY_WORDS:
            return ast.unparse(node)
    return None


class GraphAttentionRules(RuleVisitor):
    """TD514 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\n"
        ...        "def attend(e, adj):\\n"
        ...        "    e = torch.where(adj > 0, e, -9e15 * torch.ones_like(e))\\n"
        ...        "    return torch.softmax(e, dim=-1)\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(3, 'TD514')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"(?i)adj", r"softmax", r"where|masked_fill"),)

    def visit_Call(self, node: ast.Call) -> None:
        method = method_name(node)
        if self.callee(node) & {"torch.where"} and len(node.args) == 3:
            condition, masked = node.args[0], [node]
        elif method in {"masked_fill", "masked_fill_"} and node.args:
            condition, masked = node.args[0], [node]
            if method == "masked_fill_" and isinstance(node.func.value, ast.Name):  # type: ignore[attr-defined]
                masked.append(node.func.value)  # type: ignore[attr-defined]
        else:
            return
        adjacency = _adjacency_name(condition) or self._named_mask(condition, node)
        if adjacency is None:
            return
        softmax = self._softmax_of(node, masked)
        if softmax is None:
            return
        self.report(
            node,
            "TD514",
            f"`{self.code_of(node)}` masks scores for every pair of nodes with the adjacency "
            f"`{adjacency}` before the softmax on line {softmax.lineno}: dense graph attention "
            "computes, keeps and backpropagates N x N scores where the graph has a few edges "
            "per node; score the edges only (rows, cols = adj.nonzero(as_tuple=True), once) "
            "and normalise them per node with torchdoctor.ops.edge_softmax, or use PyG's "
            "GATConv (a GAT layer at Cora's size: 1,323 -> 13.6 ms forward + backward; on a "
            "batch of small dense graphs, molecules at 10% of the pairs, the dense form is the "
            "faster one)",
            pattern_lines=self._span(node, softmax),
        )

    def _span(self, node: ast.Call, softmax: ast.Call) -> tuple[int, int]:
        """The lines the dense attention takes: from the fill tensor's assignment (pytorch/
        examples' ``connectivity_mask = -9e16 * torch.ones_like(e)``, an N x N tensor too) to
        the last read of the softmax's result in the function (its dropout, its product with
        the node features)."""
        scope = self.enclosing_scope(node)
        first, last = node.lineno, softmax.end_lineno or softmax.lineno
        fill = node.args[-1] if node.args else None
        if isinstance(fill, ast.Name):
            first = min([first, *(v.lineno for v in self.assigned_values(scope, fill.id)
                                  if v.lineno < first)])  # fmt: skip
        holder = self.parent(softmax)
        if isinstance(holder, ast.Assign) and len(holder.targets) == 1 and isinstance(
                holder.targets[0], ast.Name):  # fmt: skip
            name = holder.targets[0].id
            last = max([last, *(n.lineno for n in ast.walk(scope) if isinstance(n, ast.Name)
                                and n.id == name and isinstance(n.ctx, ast.Load)
                                and n.lineno > softmax.lineno)])  # fmt: skip
        return first, last

    def _named_mask(self, condition: ast.AST, node: ast.Call) -> str | None:
        """The adjacency a mask variable was made from (``mask = adj > 0`` before
        ``e.masked_fill(~mask, -inf)``), through the name's assignments in the function."""
        while isinstance(condition, ast.UnaryOp) and isinstance(condition.op, (ast.Not, ast.Invert)):
            condition = condition.operand
        if not isinstance(condition, ast.Name):
            return None
        scope = self.enclosing_scope(node)
        for value in self.assigned_values(scope, condition.id):
            found = _adjacency_name(value) if value.lineno <= node.lineno else None
            if found is not None:
                return found
        return None

    def _softmax_of(self, node: ast.Call, masked: list[ast.AST]) -> ast.Call | None:
        """The softmax in ``node``'s function that takes its result: the call itself, a name
        assigned it, or (``masked_fill_``) the tensor it fills."""
        scope = self.enclosing_scope(node)
        names = {m.id for m in masked if isinstance(m, ast.Name)}
        holder = self.parent(node)  # (e = torch.where(adj > 0, e, fill): its name)
        if isinstance(holder, ast.Assign):
            names |= {t.id for t in holder.targets if isinstance(t, ast.Name)}
        for call in calls_named(self, "softmax"):
            if self.enclosing_scope(call) is not scope:
                continue
            if call.args and self.callee(call) & _SOFTMAX:
                argument = call.args[0]
            elif method_name(call) == "softmax" and isinstance(call.func, ast.Attribute):
                argument = call.func.value
            else:
                continue
            if argument is node or (isinstance(argument, ast.Name) and argument.id in names):
                if call.lineno >= node.lineno:
                    return call
        return None

"""Base class of the rule visitors and the syntax helpers the rule families share.

Every rule family is a LibCST ``BatchableCSTVisitor`` subclass of :class:`RuleVisitor`; all
families run in one traversal (``MetadataWrapper.visit_batched``). Names are matched by
qualified name (``QualifiedNameProvider``), so ``import torch as T`` and ``from torch.linalg
import inv`` resolve to ``torch.linalg.inv``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as m
from libcst.metadata import CodeRange, ParentNodeProvider, QualifiedNameProvider

from torchdoctor.lint.finding import Finding
from torchdoctor.lint.registry import RULES

COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)
LOOPS = (cst.For, cst.While, *COMPREHENSIONS)
SCOPES = (cst.FunctionDef, cst.Lambda, cst.ClassDef, cst.Module)
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
        "expand",
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
        "zeros_like",
        "ones_like",
    }
)
#: Dotted names that look like an nn.Module (used where types are unknowable statically).
MODEL_NAME = re.compile(
    r"(model|net|module|encoder|decoder|policy|backbone|unet|transformer|denoiser|vae|"
    r"classifier)s?$",
    re.IGNORECASE,
)
_LOG_GATE = re.compile(r"log|interval|every|print|verbose|display|report", re.IGNORECASE)


@dataclass
class FileContext:
    """What a visitor knows about the file it checks."""

    path: str
    source: str
    uses_cuda: bool = False
    cache: dict = field(default_factory=dict)


def code_of(node: cst.CSTNode) -> str:
    """Source text of a node (without its leading/trailing whitespace)."""
    return cst.Module(body=[]).code_for_node(node).strip()


def dotted(expr: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        base = dotted(expr.value)
        return None if base is None else f"{base}.{expr.attr.value}"
    return None


def method_name(call: cst.Call) -> str | None:
    """``'item'`` for ``x.item()``; None when the callee is not an attribute."""
    return call.func.attr.value if isinstance(call.func, cst.Attribute) else None


def calls_in(node: cst.CSTNode) -> list[cst.Call]:
    """All calls under ``node`` (including ``node`` itself)."""
    return list(m.findall(node, m.Call()))


def dotted_names_in(node: cst.CSTNode) -> Iterator[str]:
    """Maximal dotted names read in ``node`` (``self.A`` rather than ``self``)."""
    if isinstance(node, (cst.Name, cst.Attribute)):
        name = dotted(node)
        if name is not None:
            yield name
            return
        yield from dotted_names_in(node.value)  # attribute of a call or subscript
        return
    for child in node.children:
        if isinstance(child, (cst.Arg)) and child.keyword is not None:
            yield from dotted_names_in(child.value)
        elif isinstance(child, cst.CSTNode):
            yield from dotted_names_in(child)


def target_names(target: cst.CSTNode) -> set[str]:
    """Dotted names bound or mutated by an assignment target."""
    if isinstance(target, (cst.Name, cst.Attribute)):
        name = dotted(target)
        return {name} if name else set()
    if isinstance(target, cst.Subscript):  # A[i] = ... mutates A
        return target_names(target.value)
    if isinstance(target, (cst.Tuple, cst.List)):
        out: set[str] = set()
        for el in target.elements:
            out |= target_names(el.value)
        return out
    if isinstance(target, cst.StarredElement):
        return target_names(target.value)
    return set()


def has_host_copy(expr: cst.CSTNode) -> bool:
    """True when ``expr`` calls ``.cpu()``/``.numpy()``/``.tolist()``/``.item()``/``.to('cpu')``."""
    for call in calls_in(expr):
        name = method_name(call)
        if name in HOST_COPY_METHODS:
            return True
        if name == "to" and any(
            isinstance(a.value, cst.SimpleString) and a.value.evaluated_value == "cpu"
            for a in call.args
        ):
            return True
    return False


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


class RuleVisitor(cst.BatchableCSTVisitor):
    """Base of a rule family: metadata helpers, loop analysis, and :meth:`report`."""

    # PositionProvider is resolved only when something was reported (see resolve_findings).
    METADATA_DEPENDENCIES = (QualifiedNameProvider, ParentNodeProvider)
    #: codes this family can report (the runner skips families with none selected).
    CODES: tuple[str, ...] = ()
    #: cheap text tests: the family runs when every pattern of some group matches the source;
    #: otherwise none of its rules can fire (when no family runs, the file is only parsed).
    TRIGGERS: tuple[tuple[str, ...], ...] = ((),)

    @classmethod
    def applies(cls, text: str) -> bool:
        return any(all(re.search(p, text) for p in group) for group in cls.TRIGGERS)

    def __init__(self, context: FileContext) -> None:
        super().__init__()
        self.context = context
        self.pending: list[tuple[cst.CSTNode, str, str, bool]] = []

    # -- reporting -------------------------------------------------------------------------
    def report(
        self, node: cst.CSTNode, code: str, message: str | None = None, *, fixable: bool = False
    ) -> None:
        """Record a finding at ``node``; positions are resolved after the traversal."""
        rule = RULES[code]
        text = message or f"{rule.summary}; {rule.fix}"
        if rule.replacement and rule.replacement not in text:
            text = f"{text} (torchdoctor: {rule.replacement})"
        self.pending.append((node, code, text, fixable))

    def resolve_findings(self, positions: Mapping[cst.CSTNode, CodeRange]) -> list[Finding]:
        """Turn the recorded findings into :class:`Finding` values (1-based columns)."""
        out = []
        for node, code, text, fixable in self.pending:
            pos = positions[node]
            out.append(
                Finding(
                    code=code,
                    severity=RULES[code].severity,
                    message=text,
                    path=self.context.path,
                    line=pos.start.line,
                    column=pos.start.column + 1,
                    end_line=pos.end.line,
                    end_column=pos.end.column + 1,
                    replacement=RULES[code].replacement,
                    fixable=fixable,
                )
            )
        return out

    # -- names -----------------------------------------------------------------------------
    def qualified_names(self, node: cst.CSTNode) -> set[str]:
        return {q.name for q in self.get_metadata(QualifiedNameProvider, node, set())}

    def callee(self, call: cst.Call) -> set[str]:
        """Qualified names the callee of ``call`` may refer to."""
        return self.qualified_names(call.func)

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.get_metadata(ParentNodeProvider, node, None)

    def enclosing_scope(self, node: cst.CSTNode) -> cst.CSTNode:
        """Innermost function/lambda/class/module containing ``node``."""
        p = self.parent(node)
        while p is not None and not isinstance(p, SCOPES):
            p = self.parent(p)
        return p if p is not None else node

    def assigned_values(self, scope: cst.CSTNode, name: str) -> list[cst.BaseExpression]:
        """Values assigned to ``name`` (``name = value``) anywhere in ``scope``."""
        out = []
        for assign in m.findall(scope, m.Assign()):
            for t in assign.targets:
                if isinstance(t.target, cst.Name) and t.target.value == name:
                    out.append(assign.value)
        return out

    def has_host_copy_resolved(self, expr: cst.BaseExpression, scope: cst.CSTNode) -> bool:
        """:func:`has_host_copy`, also through names assigned in ``scope`` (one level)."""
        if has_host_copy(expr):
            return True
        for name in set(dotted_names_in(expr)):
            if "." not in name and any(has_host_copy(v) for v in self.assigned_values(scope, name)):
                return True
        return False

    # -- loops -----------------------------------------------------------------------------
    def enclosing_loops(self, node: cst.CSTNode) -> list[cst.CSTNode]:
        """Loops whose every iteration evaluates ``node``, innermost first (same function)."""
        loops: list[cst.CSTNode] = []
        child, p, in_comp = node, self.parent(node), False
        while p is not None and not isinstance(p, SCOPES):
            if isinstance(p, cst.For):
                if child is p.body:
                    loops.append(p)
            elif isinstance(p, cst.While):
                if child is p.body or child is p.test:
                    loops.append(p)
            elif isinstance(p, cst.CompFor):
                if child is not p.iter or isinstance(self.parent(p), cst.CompFor):
                    in_comp = True
            elif isinstance(p, COMPREHENSIONS):
                if in_comp or child is not p.for_in:
                    loops.append(p)
                in_comp = False
            child, p = p, self.parent(p)
        return loops

    def loop_targets(self, loop: cst.CSTNode) -> set[str]:
        """Names bound by the loop header (``for i, v in ...``)."""
        if isinstance(loop, cst.For):
            return target_names(loop.target)
        if isinstance(loop, COMPREHENSIONS):
            out, comp = set(), loop.for_in
            while comp is not None:
                out |= target_names(comp.target)
                comp = comp.inner_for_in
            return out
        return set()

    def assigned_in(self, loop: cst.CSTNode) -> set[str]:
        """Dotted names bound or mutated anywhere in the loop (its header included)."""
        key = ("assigned", id(loop))
        cache = self.context.cache
        if key in cache:
            return cache[key]
        out = set(self.loop_targets(loop))
        for node in m.findall(loop, m.Assign() | m.AugAssign() | m.AnnAssign()):
            targets = (
                [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
            )
            for t in targets:
                out |= target_names(t)
        for node in m.findall(loop, m.For() | m.CompFor()):
            out |= target_names(node.target)
        for node in m.findall(loop, m.NamedExpr()):
            out |= target_names(node.target)
        for node in m.findall(loop, m.WithItem()):
            if node.asname is not None:
                out |= target_names(node.asname.name)
        for call in calls_in(loop):
            name = method_name(call)
            if name and _INPLACE.match(name):
                base = dotted(call.func.value)
                if base:
                    out.add(base)
        cache[key] = out
        return out

    def is_invariant(self, expr: cst.BaseExpression, loop: cst.CSTNode) -> bool:
        """True when ``expr`` provably denotes the same value in every iteration of ``loop``."""
        for call in calls_in(expr):
            if method_name(call) not in PURE_METHODS:
                return False
        names = set(dotted_names_in(expr))
        if not names:
            return False
        assigned = self.assigned_in(loop)
        return not any(_related(n, a) for n in names for a in assigned)

    def direct_calls(self, body: cst.CSTNode) -> Iterator[cst.Call]:
        """Calls in ``body`` that are not inside a nested loop or function definition."""
        stack = list(body.children)
        while stack:
            node = stack.pop()
            if isinstance(node, (cst.For, cst.While, cst.FunctionDef, cst.ClassDef, cst.Lambda)):
                continue
            if isinstance(node, cst.Call):
                yield node
            stack.extend(node.children)

    def training_calls(self, node: cst.CSTNode) -> frozenset[str]:
        """Which of ``backward`` / ``step`` (optimizer or scaler) ``node`` (a loop or function)
        calls directly, outside nested loops and definitions."""
        key = ("training", id(node))
        cache = self.context.cache
        if key not in cache:
            body = node.body if isinstance(node, (cst.For, cst.While, cst.FunctionDef)) else node
            cache[key] = frozenset(
                kind for kind in map(_training_kind, self.direct_calls(body)) if kind
            )
        return cache[key]

    def is_training_body(self, node: cst.CSTNode, full: bool = False) -> bool:
        """True when ``node`` directly calls ``.backward()`` or an optimizer ``.step()``
        (both, with ``full``)."""
        kinds = self.training_calls(node)
        return len(kinds) == 2 if full else bool(kinds)

    def under_log_gate(self, node: cst.CSTNode, stop: cst.CSTNode) -> bool:
        """True when an ``if step % N == 0`` / ``if verbose`` style test guards ``node``."""
        p = self.parent(node)
        while p is not None and p is not stop:
            if isinstance(p, (cst.If, cst.IfExp)):
                test = p.test
                if m.findall(test, m.BinaryOperation(operator=m.Modulo())) or any(
                    _LOG_GATE.search(n) for n in dotted_names_in(test)
                ):
                    return True
            p = self.parent(p)
        return False


def _training_kind(call: cst.Call) -> str | None:
    name = method_name(call)
    if name == "backward":
        return "backward"
    if name == "step":
        receiver = dotted(call.func.value) or ""
        last = receiver.rsplit(".", 1)[-1].lower()
        if "optim" in last or last in {"opt", "scaler"} or last.endswith("_opt"):
            return "step"
    return None

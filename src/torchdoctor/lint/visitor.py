"""Base class of the rule visitors and the syntax helpers the rule families share.

Detection runs on the standard library's :mod:`ast` (near parse speed). One walk of the tree
links every node to its parent (``node.td_parent``), then each rule family's ``visit_<Type>``
methods are called for the nodes of that type. Names are matched by qualified name
(:class:`torchdoctor.lint.names.ImportTable`), so ``import torch as T`` and ``from torch.linalg
import inv`` resolve to ``torch.linalg.inv``. LibCST is used only to apply fixes
(:mod:`torchdoctor.lint.fixes`), on the files that have a fixable finding.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from torchdoctor.lint.finding import Finding, one_line
from torchdoctor.lint.gates import counter_equals, early_returns_before, on_by_default
from torchdoctor.lint.names import ImportTable
from torchdoctor.lint.optimizer_steps import training_kind
from torchdoctor.lint.project_scan import direct_calls
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import (  # noqa: F401 - re-exported for the rule families
    _INPLACE,
    _LOG_GATE,
    COMPREHENSIONS,
    FOR,
    FUNCTIONS,
    HOST_COPY_METHODS,
    LOOPS,
    MODEL_NAME,
    PURE_METHODS,
    SCOPES,
    _related,
    arg_values,
    body_of,
    calls_in,
    constant,
    dotted,
    dotted_names_in,
    has_host_copy,
    has_star,
    keyword,
    link_parents,
    method_name,
    parent,
    positional,
    replace_call_with,
    same_file_callee,
    segment,
    statement_list,
    target_names,
    with_keyword,
)
from torchdoctor.lint.tensors import runs_a_training_step, step_callee, steps_by_hand

#: methods that mutate a Python container in place (``tokens.append(t)``: not invariant;
#: not ``add`` or ``sort``, which a tensor has and returns a new one from)
_CONTAINER_MUTATORS = frozenset({"append", "extend", "insert", "pop", "popleft", "appendleft",
                                 "update", "remove", "discard", "clear", "setdefault", "popitem",
                                 "reverse"})  # fmt: skip
#: names of functions that run one training step
_STEP_FUNCTION = re.compile(r"(?i)step|train|update|iteration|batch|fit|optimi[sz]e")


@dataclass
class Fix:
    """A rewrite a rule records when it detects (applied by :mod:`torchdoctor.lint.fixes`).

    ``rewrite`` gets the LibCST node found at ``(line, column)`` (a call, or for ``kind ==
    "block"`` the statement list and the index of the statement) and returns the new node(s),
    or None to leave the code unchanged.

    Example:
        >>> Fix("TD506", 3, 5, "call", lambda node, tools: node).kind
        'call'
    """

    code: str
    line: int
    column: int
    kind: str
    rewrite: Callable
    end_line: int = 0
    end_column: int = 0


@dataclass
class FileContext:
    """What a visitor knows about the file it checks.

    Example:
        >>> FileContext("t.py", "é = 1\\n", lines=["é = 1"]).char_column(1, 2)
        1
    """

    path: str
    source: str
    uses_cuda: bool = False
    cache: dict = field(default_factory=dict)
    names: ImportTable | None = None
    lines: list[str] = field(default_factory=list)
    tree: ast.Module | None = None
    project: object | None = None  # torchdoctor.lint.project.Project when linting a folder

    def char_column(self, line: int, byte_offset: int) -> int:
        """0-based character column of a UTF-8 byte offset on a 1-based line."""
        if not 1 <= line <= len(self.lines):
            return byte_offset
        text = self.lines[line - 1]
        if text.isascii():
            return byte_offset
        return len(text.encode("utf-8")[:byte_offset].decode("utf-8", errors="replace"))


class RuleVisitor:
    """Base of a rule family: name resolution, loop analysis, and :meth:`report`.

    Example:
        >>> visitor = RuleVisitor(FileContext("t.py", "x = é + 1\\n", lines=["x = é + 1"]))
        >>> visitor.position(ast.parse("x = é + 1\\n").body[0].value)
        (1, 5, 1, 10)
    """

    #: the rules this family reports, documented beside their checks.
    RULES: tuple[Rule, ...] = ()
    #: codes this family can report (the runner skips families with none selected).
    CODES: tuple[str, ...] = ()
    #: cheap text tests: the family runs when every pattern of some group matches the source;
    #: otherwise none of its rules can fire (when no family runs, the file is only parsed).
    TRIGGERS: tuple[tuple[str, ...], ...] = ((),)

    @classmethod
    def applies(cls, text: str) -> bool:
        return any(all(re.search(p, text) for p in group) for group in cls.TRIGGERS)

    def __init__(self, context: FileContext) -> None:
        self.context = context
        self.names: ImportTable = context.names or ImportTable(ast.Module(body=[], type_ignores=[]))
        self.findings: list[Finding] = []
        self.fixes: list[Fix] = []

    # -- reporting -------------------------------------------------------------------------
    def position(self, node: ast.AST) -> tuple[int, int, int, int]:
        """``(line, column, end_line, end_column)`` of a node, 1-based character columns."""
        ctx = self.context
        if isinstance(node, ast.FormattedValue):
            return self._formatted_value_position(node)
        line, end_line = node.lineno, node.end_lineno or node.lineno
        column = ctx.char_column(line, node.col_offset) + 1
        end_column = ctx.char_column(end_line, node.end_col_offset or node.col_offset) + 1
        return line, column, end_line, end_column

    def _formatted_value_position(self, node: ast.FormattedValue) -> tuple[int, int, int, int]:
        """``{expr!r:spec}`` in an f-string: from the brace to its closing brace."""
        line, column, end_line, end_column = self.position(node.value)
        lines = self.context.lines
        text = lines[line - 1] if line <= len(lines) else ""
        start = column - 2
        while start > 0 and text[start] != "{":
            start -= 1
        text = lines[end_line - 1] if end_line <= len(lines) else ""
        depth, i = 1, end_column - 1
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        return line, start + 1, end_line, min(i, len(text)) + 2

    def report(
        self,
        node: ast.AST,
        code: str,
        message: str | None = None,
        *,
        fix: Callable | None = None,
        fix_kind: str = "call",
        pattern_lines: tuple[int, int] | None = None,
        cure: bool = True,
    ) -> None:
        """Record a finding at ``node``; ``fix`` (see :class:`Fix`) makes it fixable;
        ``pattern_lines``: the lines the pattern spans (:class:`Finding`); ``cure=False``: the
        rule's torchdoctor replacement does not fit this case (it is not named)."""
        rule = self.rule(code)
        # (code quoted from several source lines joins into one: a message is one line in
        # every output, an advice's title included)
        text = one_line(message or f"{rule.summary}; {rule.fix}")
        named = not rule.replacement or any(w in text for w in (rule.replacement, "torchdoctor."))
        if cure and not named:
            text = f"{text} (torchdoctor: {rule.replacement})"
        line, column, end_line, end_column = self.position(node)
        self.findings.append(
            Finding(
                code=code,
                severity=rule.severity,
                message=text,
                path=self.context.path,
                line=line,
                column=column,
                end_line=end_line,
                end_column=end_column,
                replacement=rule.replacement,
                fixable=fix is not None,
                pattern_lines=pattern_lines,
            )
        )
        if fix is not None:
            self.fixes.append(Fix(code, line, column, fix_kind, fix, end_line, end_column))

    @classmethod
    def rule(cls, code: str) -> Rule:
        """This family's rule ``code`` (KeyError for a code it does not own)."""
        table = cls.__dict__.get("_by_code")
        if table is None:
            table = {r.code: r for r in cls.RULES}
            cls._by_code = table
        return table[code]

    def code_of(self, node: ast.AST) -> str:
        """Source text of a node."""
        text = segment(self.context.lines, node)
        if text is None:
            return ast.unparse(node)
        if "\n" in text and "#" in text:  # (a comment inside a call spread over lines would
            return ast.unparse(node)  # end up inside a message quoting it on one line)
        if "\n" in text:  # continuation lines lose the enclosing block's indentation
            stmt = node
            while stmt is not None and not isinstance(stmt, ast.stmt):
                stmt = parent(stmt)
            lines = self.context.lines
            if stmt is not None and stmt.lineno <= len(lines):
                first = lines[stmt.lineno - 1]
                indent = len(first) - len(first.lstrip())
                head, *rest = text.split("\n")
                rest = [line[min(indent, len(line) - len(line.lstrip())) :] for line in rest]
                text = "\n".join([head, *rest])
        return text.strip()

    # -- names -----------------------------------------------------------------------------
    def qualified_names(self, node: ast.AST) -> set[str]:
        """Qualified names a Name/Attribute may refer to (``{'torch.linalg.inv'}``)."""
        return self.names.qualify(node)

    def callee(self, call: ast.Call) -> set[str]:
        """Qualified names the callee of ``call`` may refer to."""
        return self.names.qualify(call.func)

    @staticmethod
    def parent(node: ast.AST) -> ast.AST | None:
        return getattr(node, "td_parent", None)

    def enclosing_scope(self, node: ast.AST) -> ast.AST:
        """Innermost function/lambda/class/module containing ``node``."""
        p = parent(node)
        while p is not None and not isinstance(p, SCOPES):
            p = parent(p)
        return p if p is not None else node

    def assigned_values(self, scope: ast.AST, name: str) -> list[ast.expr]:
        """Values assigned to ``name`` (``name = value``, or paired in ``a, name = u, value``)
        anywhere in ``scope``."""
        key = ("assignments", id(scope))
        cache = self.context.cache
        table = cache.get(key)
        if table is None:
            table = {}
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            table.setdefault(t.id, []).append(node.value)
                        elif (isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple)
                              and len(t.elts) == len(node.value.elts)):  # a, b = f(x), g(y)
                            for each, value in zip(t.elts, node.value.elts):
                                if isinstance(each, ast.Name) and not isinstance(value, ast.Starred):
                                    table.setdefault(each.id, []).append(value)
            cache[key] = table
        return table.get(name, [])

    def has_host_copy_resolved(self, expr: ast.AST, scope: ast.AST) -> bool:
        """:func:`has_host_copy`, also through names assigned in ``scope`` (one level)."""
        if has_host_copy(expr):
            return True
        for name in set(dotted_names_in(expr)):
            if "." not in name and any(has_host_copy(v) for v in self.assigned_values(scope, name)):
                return True
        return False

    # -- loops -----------------------------------------------------------------------------
    def enclosing_loops(self, node: ast.AST) -> list[ast.AST]:
        """Loops whose every iteration evaluates ``node``, innermost first (same function)."""
        loops: list[ast.AST] = []
        child, p, in_comp = node, parent(node), False
        while p is not None and not isinstance(p, SCOPES):
            if isinstance(p, FOR):
                if child in p.body:
                    loops.append(p)
            elif isinstance(p, ast.While):
                if child is p.test or child in p.body:
                    loops.append(p)
            elif isinstance(p, ast.comprehension):
                comp = parent(p)
                if child is not p.iter or (comp is not None and comp.generators[0] is not p):
                    in_comp = True
            elif isinstance(p, COMPREHENSIONS):
                if in_comp or not isinstance(child, ast.comprehension):
                    loops.append(p)
                in_comp = False
            child, p = p, parent(p)
        return loops

    @staticmethod
    def loop_targets(loop: ast.AST) -> set[str]:
        """Names bound by the loop header (``for i, v in ...``); of a ``while`` loop, its
        counters: names its test reads that its body steps by a constant (``while i < n:
        ... i += 1``)."""
        if isinstance(loop, FOR):
            return target_names(loop.target)
        if isinstance(loop, COMPREHENSIONS):
            out: set[str] = set()
            for comp in loop.generators:
                out |= target_names(comp.target)
            return out
        if isinstance(loop, ast.While):
            tested = {n.id for n in ast.walk(loop.test) if isinstance(n, ast.Name)}
            return {
                node.target.id
                for node in ast.walk(ast.Module(body=loop.body, type_ignores=[]))
                if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
                and isinstance(node.op, (ast.Add, ast.Sub)) and isinstance(node.value, ast.Constant)
                and node.target.id in tested
            }  # fmt: skip
        return set()

    def assigned_in(self, loop: ast.AST) -> set[str]:
        """Dotted names bound or mutated anywhere in the loop (its header included)."""
        key = ("assigned", id(loop))
        cache = self.context.cache
        if key in cache:
            return cache[key]
        out = set(self.loop_targets(loop))
        for node in ast.walk(loop):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    out |= target_names(t)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
                out |= target_names(node.target)
            elif isinstance(node, (*FOR, ast.comprehension)):
                out |= target_names(node.target)
            elif isinstance(node, ast.withitem):
                if node.optional_vars is not None:
                    out |= target_names(node.optional_vars)
            elif isinstance(node, ast.Call):
                name = method_name(node)
                if name and (_INPLACE.match(name) or name in _CONTAINER_MUTATORS):
                    base = dotted(node.func.value)
                    if base:
                        out.add(base)
        cache[key] = out
        return out

    def is_invariant(self, expr: ast.AST, loop: ast.AST) -> bool:
        """True when ``expr`` provably denotes the same value in every iteration of ``loop``."""
        for call in calls_in(expr):  # (len(x) of what the loop keeps: the same number too)
            if method_name(call) not in PURE_METHODS and getattr(call.func, "id", None) != "len":
                return False
        names = set(dotted_names_in(expr))
        if not names:
            return False
        assigned = self.assigned_in(loop)
        return not any(_related(n, a) for n in names for a in assigned)

    @staticmethod
    def direct_calls(body: ast.AST | Iterable[ast.AST]) -> Iterator[ast.Call]:
        """Calls in ``body`` (a node's children, or a statement list) that are not inside a
        nested loop or function definition (``project_scan.direct_calls``)."""
        return direct_calls(body)

    def training_calls(self, node: ast.AST) -> frozenset[str]:
        """Which of ``backward`` / ``step`` (optimizer or scaler) ``node`` (a loop or function)
        calls directly, outside nested loops and definitions."""
        key = ("training", id(node))
        cache = self.context.cache
        if key not in cache:
            body = node.body if isinstance(node, (*FOR, ast.While, *FUNCTIONS)) else node
            calls = list(self.direct_calls(body))
            kinds = {kind for kind in (training_kind(c, self) for c in calls) if kind} | ({"step"} if steps_by_hand(body) else set())
            if isinstance(node, (*FOR, ast.While, list)) and any(map(runs_a_training_step, calls)):
                kinds |= {"backward", "step"}  # (an RL loop's agent.learn(batch))
            if isinstance(node, (*FOR, ast.While)) and len(kinds) < 2:
                # a loop calling a step function (`self.train_step(batch)`) that runs backward
                # and the optimizer step, or one of the project stepping the parameters by hand
                # (DP-SGD's imported noisy_step): a training loop one call away
                for callee in filter(None, (step_callee(c, self) for c in calls)):
                    inner = {k for k in map(training_kind, self.direct_calls(callee.body)) if k}
                    kinds |= inner if inner == {"backward", "step"} else (
                        {"step"} if steps_by_hand(callee.body) else set())
            cache[key] = frozenset(kinds)
        return cache[key]

    def is_training_body(self, node: ast.AST, full: bool = False) -> bool:
        """True when ``node`` directly calls ``.backward()`` or an optimizer ``.step()``
        (both, with ``full``)."""
        kinds = self.training_calls(node)
        return len(kinds) == 2 if full else bool(kinds)

    def is_step_function(self, scope: ast.AST) -> bool:
        """``scope`` runs a whole training step (backward and an optimizer step) each time it
        is called, and is called every step: named like a step (``train_step``, ``update``)
        or called in a step loop of the project (not a one-step demo)."""
        if not (isinstance(scope, FUNCTIONS) and self.is_training_body(scope, full=True)):
            return False
        if _STEP_FUNCTION.search(scope.name):
            return True
        project = self.context.project
        return project is not None and project.called_in_loop(scope.name, path=self.context.path) is not None  # type: ignore[attr-defined]

    def under_log_gate(self, node: ast.AST, stop: ast.AST) -> bool:
        """True when an ``if step % N == 0`` / ``if verbose`` style test guards ``node``, or
        returns before it (``if step % N: return``: :func:`early_returns_before`)."""
        p = parent(node)
        while p is not None and p is not stop:
            if isinstance(p, (ast.If, ast.IfExp)) and self.is_gate_test(p.test, p):
                return True
            p = parent(p)
        return any(self.is_gate_test(g.test, g)
                   for g in early_returns_before(node, self.enclosing_scope(node)))  # fmt: skip

    def is_gate_test(self, test: ast.AST, where: ast.AST) -> bool:
        """``step % N == 0``, ``verbose``, ``should_log`` (also a name assigned such a test in
        the same function: ``should_val = step % n == 0``)."""
        scope = self.enclosing_scope(where)
        if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) for n in ast.walk(test)):
            return True
        if counter_equals(test, next(iter(self.enclosing_loops(where)), None)):
            return True  # (`if step == 0:`: one step)
        if any(_LOG_GATE.search(n) for n in dotted_names_in(test)):
            return not on_by_default(test, scope)  # (`if verbose:` with verbose=1: every step)
        for name in dotted_names_in(test):
            if "." in name:
                continue
            if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
                   for value in self.assigned_values(scope, name) for n in ast.walk(value)):
                return True  # fmt: skip
        return False

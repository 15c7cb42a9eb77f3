"""TD712: work done on every training step whose result is read only every N steps.

pytorch/examples' GCN evaluates its model twice after each training step (the train and the
validation mask: two forward passes, more than half of the step) and prints the result only
``if epoch % print_every == 0``: 19 of 20 evaluations are thrown away. The same shape, smaller:
an accuracy computed every step and logged every 100. Reported: an assignment at the top level
of a training step (a loop or function body that calls ``.backward()`` or an optimizer's
``.step()``) whose value calls something (a model, a user function, a tensor op) and whose
every target is read only inside a periodic ``if`` (a test with ``%``, or a name assigned such
a test: ``should_log = step % n == 0``) of the same function.

Not reported: a value read anywhere outside such an ``if`` (returned, accumulated, passed on,
used by the next statement); an assignment to an attribute or an item (it may be read
elsewhere); a value that only reads a tensor to the host (``loss.item()``: TD201's, the sync);
calls of the standard library's cheap helpers (``time.time()``, ``len``, ``str`` ...) and
bookkeeping reads (``scheduler.get_last_lr()``, a logger's, a timer's, a progress bar's); a
call that changes state in place, its result only a by-product (``grad_norm =
clip_grad_norm_(...)``: the clipping must run every step; ``total = opt.step(closure)``).

Example:
    >>> from torchdoctor.lint import lint_source
    >>> src = ("def train_iter(epoch, model, opt, x, y, every):\\n"
    ...        "    model(x).sum().backward()\\n    opt.step()\\n"
    ...        "    acc = evaluate(model, x, y)\\n"
    ...        "    if epoch % every == 0:\\n        print(acc)\\n")
    >>> [(f.line, f.code) for f in lint_source(src)]
    [(4, 'TD712')]
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import same_file_callee
from torchdoctor.lint.tensors import FRAMEWORK_STEPS, RANK_NAME, runs_a_training_step
from torchdoctor.lint.visitor import FOR, FUNCTIONS, RuleVisitor, dotted, dotted_names_in

RULES = (
    Rule(
        "TD712",
        "result-read-every-n-steps",
        "warning",
        "work done on every training step (an evaluation, a metric) whose result is read only "
        "inside an `if step % N == 0` block: N - 1 of every N results are thrown away",
        "compute it inside the `if` that reads it",
        "for step, (x, y) in enumerate(loader):\n    loss = model(x, y)\n    loss.backward()\n"
        "    opt.step()\n    acc = evaluate(model, val_x, val_y)\n"
        "    if step % 100 == 0:\n        print(step, acc)",
        "for step, (x, y) in enumerate(loader):\n    loss = model(x, y)\n    loss.backward()\n"
        "    opt.step()\n    if step % 100 == 0:\n"
        "        acc = evaluate(model, val_x, val_y)\n        print(step, acc)",
    ),
)

#: calls that cost nothing worth moving (the standard library's clocks and conversions)
_CHEAP_ROOTS = frozenset({
    "time", "datetime", "math", "os", "random", "logging", "len", "range", "int", "float",
    "str", "bool", "round", "abs", "min", "max", "print", "format", "getattr", "isinstance",
    "enumerate", "zip", "list", "tuple", "dict", "set", "next", "iter", "sorted", "divmod",
    # (the clocks imported by name: `from time import perf_counter`, mamba.py's step timer)
    "perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "process_time",
    "process_time_ns", "thread_time", "thread_time_ns", "time_ns", "default_timer",
})  # fmt: skip
#: host reads: a value that only copies a tensor to the host is TD201's (the sync)
_HOST_READS = frozenset({"item", "cpu", "tolist", "numpy", "detach", "float", "mean", "sum"})
#: receivers whose methods read bookkeeping, not compute (a scheduler's learning rate, a
#: logger, a timer, a progress bar): nothing worth moving under the `if`
_BOOKKEEPING = re.compile(
    r"sched|optim|(?:^|[._])log(?:ger|gers|ging|s)?(?:$|[._])|meter|timer|clock|writer|"
    r"tracker|progress|pbar|tqdm|args|config|cfg",  # (a logger; not `logits`)
    re.IGNORECASE,
)


class PeriodicReadRules(RuleVisitor):
    """TD712 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("for i, (x, y) in enumerate(loader):\\n    model(x).sum().backward()\\n"
        ...        "    opt.step()\\n    acc = accuracy(model(x), y)\\n"
        ...        "    history.append(acc)\\n")  # read every step: nothing to move
        >>> [f.code for f in lint_source(src)]
        []
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"%", r"backward\(|\.step\(|def training_step\("),)

    def visit_Assign(self, node: ast.Assign) -> None:
        names = _target_names(node.targets)
        if not names or not self._does_work(node.value) or _changes_state(node.value):
            return
        body, child = self.parent(node), node
        while isinstance(body, (ast.With, ast.If)) and (  # (a with, or the block that trains:
            isinstance(body, ast.With) or (  # `if step % train_every == 0: agent.learn(...)`)
                any(s is child for s in body.body) and self.is_training_body(body.body))
        ):
            body, child = self.parent(body), body
        if not isinstance(body, (*FOR, ast.While, *FUNCTIONS)) or not any(
            s is child for s in body.body  # type: ignore[attr-defined]
        ):
            return  # (under an if, a try: not every step's for sure)
        if not (self.is_training_body(body) or (  # (Lightning's training_step: every step)
            isinstance(body, FUNCTIONS) and body.name in FRAMEWORK_STEPS
            and isinstance(self.parent(body), ast.ClassDef)
        )):
            return
        scope = body if isinstance(body, FUNCTIONS) else self.enclosing_scope(node)
        gate = self._read_only_under_gate(names, node, scope, body)
        if gate is None:
            return
        read = ", ".join(f"`{n}`" for n in names)
        self.report(
            node,
            "TD712",
            f"`{self.code_of(node.value)}` runs on every step, but {read} "
            f"{'is' if len(names) == 1 else 'are'} read only under "
            f"`if {self.code_of(gate.test)}`: compute it inside that `if`, so the other steps "
            "skip it",
        )

    def _does_work(self, value: ast.AST) -> bool:
        """``value`` calls something beyond the cheap helpers and host reads, or reduces an
        elementwise comparison (a metric: ``(preds == y).float().mean()``)."""
        calls = [n for n in ast.walk(value) if isinstance(n, ast.Call)]
        if any(map(runs_a_training_step, calls)):
            return False  # (info = agent.update(buf.sample(b)): the training step itself)
        methods = {c.func.attr for c in calls if isinstance(c.func, ast.Attribute)}
        if methods & {"float", "mean", "sum"} and "item" not in methods and any(
                isinstance(n, ast.Compare) for n in ast.walk(value)):  # fmt: skip
            return True
        for call in calls:
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr in _HOST_READS:
                continue
            name = dotted(func) or ""
            base = func
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in _CHEAP_ROOTS:
                continue  # (not `(preds == y).float().mean()`: a tensor's methods)
            receiver = name.rsplit(".", 1)[0] if "." in name else ""
            if isinstance(func, ast.Attribute) and (
                func.attr.startswith("get_") or _BOOKKEEPING.search(receiver)
            ):  # (scheduler.get_last_lr(), logger.elapsed(): bookkeeping)
                continue
            callee = same_file_callee(call)
            if callee is not None and self.is_training_body(callee):
                continue  # (the step itself: `loss = self._run_batch(x, y)` trains)
            return True
        return False

    def _read_only_under_gate(
        self, names: list[str], node: ast.Assign, scope: ast.AST, loop: ast.AST
    ) -> ast.If | None:
        """The first periodic ``if`` reading the names, when every read of them in ``scope``
        is inside one; else None. A read after the loop of a name bound again after the loop
        (``mae, mse = validate(...)`` once per epoch) reads that new value, not the step's."""
        first: ast.If | None = None
        after = getattr(loop, "end_lineno", None) if not isinstance(loop, FUNCTIONS) else None
        named = [n for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id in names]
        rebound = [n.lineno for n in named if isinstance(n.ctx, ast.Store)
                   and after is not None and n.lineno > after]  # fmt: skip
        for load in named:
            if isinstance(load.ctx, ast.Store) or isinstance(load.ctx, ast.Del):
                continue
            if any(line <= load.lineno for line in rebound):
                continue  # (it reads the value bound after the loop)
            gate = self._periodic_gate(load, scope)
            if gate is None or load.lineno < node.lineno or any(n is node for n in ast.walk(gate)):
                return None  # (the gate of the training block holding the work itself)
            first = first or gate
        return first

    def _periodic_gate(self, node: ast.AST, scope: ast.AST) -> ast.If | None:
        p = self.parent(node)
        child = node
        while p is not None and p is not scope:
            if isinstance(p, ast.If) and any(s is child for s in p.body):
                if self._periodic(p.test, p):  # (its else runs in the other steps)
                    return p
            child, p = p, self.parent(p)
        return None

    def _periodic(self, test: ast.AST, where: ast.AST) -> bool:
        """``step % N == 0`` (or a name assigned such a test in the same function); not a
        test of which process runs (``if self.rank % 2 == 0``)."""
        names = [n.rsplit(".", 1)[-1] for n in dotted_names_in(test)]
        if names and all(RANK_NAME.search(n) for n in names):
            return False
        if _has_mod(test):
            return True
        scope = self.enclosing_scope(where)
        return any(
            _has_mod(value)
            for name in dotted_names_in(test)
            if "." not in name
            for value in self.assigned_values(scope, name)
        )


def _has_mod(node: ast.AST) -> bool:
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) for n in ast.walk(node))


def _target_names(targets: list[ast.expr]) -> list[str]:
    """The names an assignment binds, or [] when it also writes an attribute or an item."""
    names: list[str] = []
    for target in targets:
        items = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
        for item in items:
            if not isinstance(item, ast.Name):
                return []
            names.append(item.id)
    return names


_OPTIMIZER_NAME = re.compile(r"(?i)^(opt|optim|optimizer|optimiser)(_\w+)?$|_opt(imizer)?$")


def _changes_state(value: ast.AST) -> bool:
    """``value`` is a call that works in place (torch's trailing-underscore convention:
    ``clip_grad_norm_``, ``add_``) or steps an optimizer or a scheduler: its result is a
    by-product of what it must do every step; so is a call handed the optimizer (it sets the
    learning rate: ``lr = adjust_learning_rate(optimizer, epoch, args)``).

    Example:
        >>> _changes_state(ast.parse("torch.nn.utils.clip_grad_norm_(ps, 1.0)").body[0].value)
        True
        >>> _changes_state(ast.parse("evaluate(model, x)").body[0].value)
        False
    """
    if not isinstance(value, ast.Call):
        return False
    name = (dotted(value.func) or "").rsplit(".", 1)[-1]
    handed = [(dotted(a) or "").rsplit(".", 1)[-1] for a in value.args]  # (sets its lr:
    return (name.endswith("_") and not name.startswith("_")) or name == "step" or any(  # MAE's
        _OPTIMIZER_NAME.search(h) for h in handed)  # adjust_learning_rate(optimizer, ...)

"""The shapes TD602 reads: an evaluation function's loops that run with autograd on, and the
models a function got ready for inference (``.eval()`` here or in the loader it called).

Example:
    >>> from torchdoctor.lint import lint_source
    >>> src = ("def load(d):\\n    return Net().to(d).eval()\\n"
    ...        "def track(frames):\\n    det = load('cuda')\\n    for f in frames:\\n"
    ...        "        out = det(f)\\n")
    >>> [(f.line, f.code) for f in lint_source(src)]
    [(5, 'TD602')]
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

from torchdoctor.lint.call_index import calls_named
from torchdoctor.lint.syntax import (
    FOR,
    FUNCTIONS,
    MODEL_NAME,
    dotted,
    method_name,
    same_file_callee,
)

NO_GRAD = frozenset(
    {
        "torch.no_grad",
        "torch.inference_mode",
        "torch.enable_grad",
        "torch.set_grad_enabled",
        "torch.autograd.grad_mode.no_grad",
        "torch.autograd.grad_mode.inference_mode",
    }
)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def top_loops(rule: Any, body: list[ast.AST]) -> Iterator[ast.AST]:
    """Outermost for/while loops (and comprehensions: ``preds = [model(b) for b in loader]``)
    of a function body not already under a no-grad ``with`` (``rule``: the visitor, which
    resolves what a call is).

    Example:
        >>> class Rule:
        ...     def callee(self, call): return set()
        >>> body = ast.parse("for x in xs:\\n    f(x)\\nys = [g(y) for y in xs]").body
        >>> [type(n).__name__ for n in top_loops(Rule(), body)]
        ['ListComp', 'For']
    """
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (*FUNCTIONS, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.With, ast.AsyncWith)) and any(
            isinstance(item.context_expr, ast.Call) and rule.callee(item.context_expr) & NO_GRAD
            for item in node.items
        ):
            continue
        if isinstance(node, (*FOR, ast.While, *_COMPREHENSIONS)):
            yield node
            continue
        stack.extend(ast.iter_child_nodes(node))


def eval_loops(rule: Any, body: list[ast.AST]) -> Iterator[ast.AST]:
    """Outermost loops without a backward pass and not under no-grad; a loop that trains
    (an epoch loop of a train-and-validate function) is looked into for its other loops.

    Example:
        >>> class Rule:
        ...     def callee(self, call): return set()
        >>> src = "for e in range(3):\\n    loss.backward()\\n    for b in val:\\n        m(b)"
        >>> [loop.lineno for loop in eval_loops(Rule(), ast.parse(src).body)]
        [3]
    """
    for loop in top_loops(rule, body):
        if any(isinstance(call, ast.Call) and (method_name(call) == "backward" or _trains(call))
               for call in ast.walk(loop)):  # fmt: skip
            yield from eval_loops(rule, _inside(loop))
        else:
            yield loop


def _inside(loop: ast.AST) -> list[ast.AST]:
    """A loop's statements; a comprehension's element (``[finetune(m, t) for t in tasks]``,
    whose call trains, has no body)."""
    if isinstance(loop, (*FOR, ast.While)):
        return loop.body
    if isinstance(loop, ast.DictComp):
        return [loop.key, loop.value]
    return [loop.elt]  # type: ignore[attr-defined]


#: a loader of held-out data by its name (``val``, ``val_loader``, ``test_dl``, ``dev_data``)
_HELD_OUT = re.compile(r"(?i)^(val|valid|validation|test|dev|eval)(_?(loader|dl|data|set|ds|"
                       r"batches|iter))?$")


def held_out_loops(rule: Any, body: list[ast.AST]) -> Iterator[ast.AST]:
    """The loops over a held-out loader (``for x, y in val_loader:``) inside a loop that
    trains (an epoch loop validating after its steps) with no backward of their own and not
    under no-grad: validation without ``model.eval()``, whose model calls record a graph.

    Example:
        >>> class Rule:
        ...     def callee(self, call): return set()
        >>> src = ("for e in range(3):\\n    for x in train:\\n        loss(x).backward()\\n"
        ...        "    for x in val:\\n        m(x)\\n    for x in extra:\\n        m(x)")
        >>> [loop.lineno for loop in held_out_loops(Rule(), ast.parse(src).body)]
        [4]
    """
    for loop in top_loops(rule, body):
        if isinstance(loop, FOR) and any(isinstance(c, ast.Call) and method_name(c) == "backward"
                                         for c in ast.walk(loop)):  # fmt: skip
            for inner in eval_loops(rule, loop.body):
                name = dotted(inner.iter) if isinstance(inner, FOR) else None
                if name and _HELD_OUT.match(name.rsplit(".", 1)[-1]):
                    yield inner


def _trains(call: ast.Call) -> bool:
    """``ppo_step(policy, optimizer, batch)``: a function of the file that runs a backward pass
    somewhere in its body (its own epoch and minibatch loops included); also a method of the
    class (Demucs' solver: ``self._run_one_epoch(epoch)`` in its epoch loop)."""
    function = same_file_callee(call) if isinstance(call.func, ast.Name) or (
        isinstance(call.func, ast.Attribute) and dotted(call.func.value) == "self") else None
    return function is not None and any(
        isinstance(c, ast.Call) and method_name(c) == "backward" for c in ast.walk(function))


def under_no_grad(rule: Any, node: ast.AST, stop: ast.AST) -> bool:
    """``node`` sits in a ``with torch.no_grad():`` (or inference_mode) inside ``stop``.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = "def ev(model, xs):\\n    model.eval()\\n    for x in xs:\\n        with torch.no_grad():\\n            model(x)\\n"
        >>> [f.code for f in lint_source("import torch\\n" + src)]  # (the call is under no_grad)
        []
    """
    parent = rule.parent(node)
    while parent is not None and parent is not stop:
        if isinstance(parent, (ast.With, ast.AsyncWith)) and any(
            isinstance(item.context_expr, ast.Call) and rule.callee(item.context_expr) & NO_GRAD
            for item in parent.items
        ):
            return True
        parent = rule.parent(parent)
    return False


def loaded_in_eval_mode(body: list[ast.AST], context: Any) -> set[str]:
    """Names ``body`` assigns from a loader function that puts its model in eval mode
    (``detector = load_detector(device)`` with ``def load_detector`` returning a model it
    called ``.eval()`` on, in the file or another of the project): models ready for inference,
    though this function never calls ``.eval()`` itself.

    Example:
        >>> class Context:  # (the linted file, no project)
        ...     tree, project = ast.parse("def load(d):\\n    return Net().eval()"), None
        >>> loaded_in_eval_mode(ast.parse("det = load(0)\\nx = f(1)").body, Context())
        {'det'}
    """
    names: set[str] = set()
    for stmt in _statements(body):  # (also in a loop or a branch: loaded on first use)
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            continue
        target, value = stmt.targets[0], stmt.value
        pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple)
                 and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts)
                 else [(target, value)])  # fmt: skip
        for name, call in pairs:
            if isinstance(name, ast.Name) and returns_eval_model(call, context):
                names.add(name.id)
    return names


def returns_eval_model(call: ast.AST, context: Any) -> bool:
    """``load_generator(ckpt, device)``: a call of a module-level function of the linted file
    or the project that returns a model it put in eval mode (a loader).

    Example:
        >>> class Context:  # (the linted file, no project)
        ...     tree, project = ast.parse("def load(d):\\n    return Net().eval()"), None
        >>> returns_eval_model(ast.parse("load(0)", mode="eval").body, Context())
        True
    """
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        return False
    function = _module_function(context, call.func.id)
    return function is not None and _returns_its_eval_model(function)


#: methods a loader chains on a model it returns (casts, moves, eval itself)
_MODEL_CHAIN = frozenset({"half", "to", "cuda", "cpu", "float", "bfloat16", "eval",
                          "requires_grad_"})  # fmt: skip


def _returns_its_eval_model(function: ast.AST) -> bool:
    """Whether ``function`` returns a model it put in eval mode: ``return Net().eval()``,
    ``model.eval(); return model``, ``m = Net().to(d).eval(); return m, cfg`` (not a function
    that evaluates a model it made and returns the scores: an ensemble's averaged output).

    Example:
        >>> fn = ast.parse("def ensemble(c, x):\\n    m = Net().eval()\\n    return m(x) / 2").body[0]
        >>> _returns_its_eval_model(fn)
        False
        >>> fn = ast.parse("def load(c):\\n    m = Net()\\n    m.eval()\\n    return m, c").body[0]
        >>> _returns_its_eval_model(fn)
        True
    """
    evaluated: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and method_name(node) == "eval" and not node.args:
            root = node.func.value  # type: ignore[attr-defined]
            while isinstance(root, ast.Call) and method_name(root) in _MODEL_CHAIN:
                root = root.func.value  # type: ignore[attr-defined]
            if isinstance(root, ast.Name):  # (model.eval(), model.to(d).eval())
                evaluated.add(root.id)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name) and _model_in_eval(node.value, evaluated):  # fmt: skip
            evaluated.add(node.targets[0].id)

    def returned(value: ast.AST | None) -> bool:
        if isinstance(value, ast.Tuple):
            return any(returned(v) for v in value.elts)
        return value is not None and _model_in_eval(value, evaluated)

    return any(isinstance(n, ast.Return) and returned(n.value) for n in ast.walk(function))


def _model_in_eval(value: ast.AST, evaluated: set[str]) -> bool:
    """``value`` is a model in eval mode: a chain of casts and moves that holds ``.eval()``, or
    one rooted at a name in ``evaluated``."""
    seen_eval = False
    while isinstance(value, ast.Call) and method_name(value) in _MODEL_CHAIN:
        seen_eval = seen_eval or method_name(value) == "eval"
        value = value.func.value  # type: ignore[attr-defined]
    return seen_eval or (isinstance(value, ast.Name) and value.id in evaluated)


def given_eval_models(rule: Any, function: ast.AST) -> set[str]:
    """The parameters of ``function`` that every call of it in the file (at least one) passes
    a model put in eval mode: ``G = load_generator(ckpt).half()`` (a loader returning
    ``.eval()``'s model), ``net = Net().eval()``, then ``translate_folder(G, ...)``
    (``rule``: the visitor, with its file's call index).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("def run(g, xs):\\n    return [g(x) for x in xs]\\n"
        ...        "def main(xs):\\n    net = Net().eval()\\n    run(net, xs)\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]  # (g runs with autograd on)
        [(2, 'TD602')]
    """
    calls = [c for c in calls_named(rule, getattr(function, "name", "")) if isinstance(c.func, ast.Name)]
    params = [a.arg for a in function.args.args] if isinstance(function, FUNCTIONS) else []
    found: set[str] | None = None
    for call in calls if params else ():
        scope = rule.enclosing_scope(call)
        given = {params[i] for i, arg in enumerate(call.args[:len(params)]) if isinstance(arg, ast.Name)
                 and (any(_eval_model(v, rule.context) or _holds_eval_model(rule, scope, v)
                          for v in rule.assigned_values(scope, arg.id))
                      or _put_in_eval(scope, arg.id, call))}  # fmt: skip
        found = given if found is None else found & given
    return found or set()


def _put_in_eval(scope: ast.AST, name: str, call: ast.Call) -> bool:
    """``model.eval()`` as a statement of ``scope``, or of a block around ``call`` in it (a
    script's ``if __name__ == "__main__":``), before ``call`` (``model = Net(n);
    model.load_state_dict(sd); model.eval(); depth(model, words)``)."""
    body = getattr(scope, "body", ())  # (a lambda's body is one expression: no statements)
    blocks = [body] if isinstance(body, list) else []
    child, above = call, getattr(call, "td_parent", None)
    while above is not None and child is not scope and above is not scope:
        blocks += [b for b in (getattr(above, "body", None), getattr(above, "orelse", None))
                   if isinstance(b, list) and any(s is child for s in b)]  # fmt: skip
        child, above = above, getattr(above, "td_parent", None)
    return any(
        isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and not s.value.args
        and method_name(s.value) == "eval" and dotted(s.value.func.value) == name
        and s.lineno < call.lineno for block in blocks for s in block)  # fmt: skip


def _holds_eval_model(rule: Any, scope: ast.AST, value: ast.AST) -> bool:
    """``Tracker(model, device)``: an instance of a class of this file built from a model in
    eval mode (a tracker, a predictor wrapping it: its methods run it)."""
    tree = rule.context.tree
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and tree is not None
            and any(isinstance(c, ast.ClassDef) and c.name == value.func.id for c in tree.body)):
        return False
    return any(isinstance(a, ast.Name) and any(_eval_model(v, rule.context)
               for v in rule.assigned_values(scope, a.id)) for a in value.args)  # fmt: skip


def wrapper_runs_model(rule: Any, receiver: str, method: str) -> bool:
    """``tracker.update(frame)``: ``receiver`` holds an instance of a class of this file (as
    :func:`_holds_eval_model` found it) whose ``method`` calls a model it holds
    (``self.model.track(x)``) with autograd on."""
    tree = rule.context.tree
    for cls in (c for c in tree.body if isinstance(c, ast.ClassDef)) if tree is not None else ():
        fn = next((f for f in cls.body if isinstance(f, FUNCTIONS) and f.name == method), None)
        if fn is None or any((dotted(d.func if isinstance(d, ast.Call) else d) or "").endswith(
                ("no_grad", "inference_mode")) for d in fn.decorator_list):  # fmt: skip
            continue
        held = {dotted(c.func.value) for c in ast.walk(fn) if isinstance(c, ast.Call)
                and isinstance(c.func, ast.Attribute) and not under_no_grad(rule, c, fn)}
        if any(h and h.count(".") == 1 and h.startswith("self.") and MODEL_NAME.search(h[5:])
               for h in held):  # fmt: skip
            return True
    return False


def _eval_model(value: ast.AST, context: Any) -> bool:
    """``Net().eval()``, ``load_generator(ckpt).half()``: a value that is a model in eval mode
    (through casts and moves)."""
    while isinstance(value, ast.Call) and method_name(value) in ("half", "to", "cuda", "float", "eval"):
        if method_name(value) == "eval":
            return True
        value = value.func.value  # type: ignore[attr-defined]
    return returns_eval_model(value, context)


def _statements(body: list[ast.AST]) -> Iterator[ast.AST]:
    """The statements of ``body`` and those nested in its blocks, not in nested functions or
    classes."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        if isinstance(node, (*FUNCTIONS, ast.ClassDef)):
            continue
        yield node
        stack.extend(reversed([c for c in ast.iter_child_nodes(node)
                               if isinstance(c, (ast.stmt, ast.excepthandler))]))


def _module_function(context: Any, name: str) -> ast.AST | None:
    """The linted file's module-level ``def name``, else the project's one such function
    (another file's loader), else None."""
    tree = context.tree
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    project = context.project
    return project.module_function(name) if project is not None else None


def evaluated_in_init(method: ast.AST) -> set[str]:
    """The ``self.x`` that the ``__init__`` of a plain class (no ``...Module`` base) holding
    ``method`` puts in eval mode (PatchCore's ``self.extractor =
    FeatureExtractor(b).to(device).half().eval()``, or ``self.model.eval()``): models its other
    methods run for inference. Needs the parent links.

    Example:
        >>> from torchdoctor.lint.syntax import link_parents
        >>> src = ("class Core:\\n    def __init__(self, b):\\n        self.net = Net(b).eval()\\n"
        ...        "    def fit(self, loader):\\n        pass\\n")
        >>> tree = link_parents(ast.parse(src))[0]
        >>> evaluated_in_init(tree.body[0].body[1])
        {'self.net'}
    """
    owner = getattr(method, "td_parent", None)
    if not isinstance(owner, ast.ClassDef) or any(
            (dotted(b) or "").endswith("Module") for b in owner.bases):  # fmt: skip
        return set()
    init = next((f for f in owner.body if isinstance(f, FUNCTIONS) and f.name == "__init__"), None)
    found: set[str] = set()
    for node in ast.walk(init) if init is not None and init is not method else ():
        chain, name = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            chain, name = node.value, dotted(node.targets[0])
        elif isinstance(node, ast.Expr):  # (self.model.eval())
            chain = node.value
        while isinstance(chain, ast.Call) and isinstance(chain.func, ast.Attribute):
            if chain.func.attr == "eval" and not chain.args:
                name = name or dotted(chain.func.value)
                if name and name.startswith("self.") and name.count(".") == 1:
                    found.add(name)
                break
            chain = chain.func.value
    return found


def method_runs(call: ast.Call, receivers: set[str]) -> bool:
    """``self._embed(images)``: a method of the class that calls one of ``receivers``
    (``self.extractor(x)``) without turning autograd off, and neither trains nor needs the
    graph (no backward, optimizer step or autograd.grad in it).

    Example:
        >>> from torchdoctor.lint.syntax import link_parents
        >>> src = ("class Core:\\n    def _embed(self, x):\\n        return self.net(x)\\n"
        ...        "    def fit(self, xs):\\n        return [self._embed(x) for x in xs]\\n")
        >>> tree = link_parents(ast.parse(src))[0]
        >>> call = tree.body[0].body[1].body[0].value.elt
        >>> method_runs(call, {"self.net"})
        True
    """
    function = same_file_callee(call) if isinstance(call.func, ast.Attribute) else None
    if function is None or any((dotted(d.func if isinstance(d, ast.Call) else d) or "").endswith(
            ("no_grad", "inference_mode")) for d in function.decorator_list) or any(
            isinstance(c, ast.Call) and (method_name(c) in ("backward", "step", "requires_grad_")
                                         or (dotted(c.func) or "").endswith("autograd.grad"))
            for c in ast.walk(function)):  # fmt: skip
        return False  # (a method that trains, or needs the graph: forces by autograd.grad)
    no_grad = [n for n in ast.walk(function) if isinstance(n, ast.With) and any(
        (dotted(getattr(i.context_expr, "func", None)) or "").endswith(("no_grad", "inference_mode"))
        for i in n.items)]  # fmt: skip
    hidden = {id(c) for w in no_grad for c in ast.walk(w)}
    return any(isinstance(c, ast.Call) and dotted(c.func) in receivers and id(c) not in hidden
               for c in ast.walk(function))  # fmt: skip

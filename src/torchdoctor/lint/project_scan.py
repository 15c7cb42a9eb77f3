"""What the project index looks for in one file, function or loop: CUDA use, a ``no_grad``
around a node, a function that turns autograd off or runs a model passed to it, the calls of a
loop's body, a loop that runs a step per iteration. :class:`torchdoctor.lint.project.Project`
asks these of every file; rules ask some of them directly.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from torchdoctor.lint.model_calls import FORWARD_METHODS, names_a_module
from torchdoctor.lint.syntax import _LOG_GATE, dotted
from torchdoctor.lint.tensors import framework_step_method

USES_CUDA = re.compile(
    r"\.cuda\(|[\"']cuda(:\d+)?[\"']|non_blocking\s*=\s*True"
    r"|accelerator\s*=\s*[\"'](gpu|cuda|auto)[\"']"  # (Lightning's Trainer places the batches)
    r"|\bAccelerator\(|device_map\s*="  # (Hugging Face accelerate / from_pretrained place them)
    r"|torch\.accelerator\b|[\"']mps[\"']|[\"']xpu[\"']"  # (torch's device-generic API)
)
NO_GRAD_NAMES = frozenset({"no_grad", "inference_mode"})


def _opens_no_grad(expr: ast.AST) -> bool:
    """``torch.no_grad()`` / ``inference_mode`` (called or not), as a ``with`` item or a
    decorator.

    Example:
        >>> _opens_no_grad(ast.parse("th.no_grad()").body[0].value)
        True
    """
    func = expr.func if isinstance(expr, ast.Call) else expr
    return (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")) in NO_GRAD_NAMES


def _under_no_grad(node: ast.AST) -> bool | ast.AST:
    """True when ``node`` runs under ``with torch.no_grad()`` / ``inference_mode`` or in a
    function decorated with them; else the innermost enclosing function (or False)."""
    parent = getattr(node, "td_parent", None)
    while parent is not None:
        if isinstance(parent, (ast.With, ast.AsyncWith)):
            if any(_opens_no_grad(item.context_expr) for item in parent.items):
                return True
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(_opens_no_grad(deco) for deco in parent.decorator_list):
                return True
            return parent
        parent = getattr(parent, "td_parent", None)
    return False


def _disables_grad(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """``function`` turns autograd off around its work, hands the call on to another object's
    method of its own name, or is a stub (see :meth:`Project.method_disables_grad`)."""
    body = [s for s in function.body
            if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]  # fmt: skip
    if all(isinstance(s, (ast.Pass, ast.Raise)) for s in body):
        return True  # (a stub: `...`, a docstring, NotImplementedError)
    if any(_opens_no_grad(deco) for deco in function.decorator_list):
        return True
    for node in ast.walk(function):
        if isinstance(node, (ast.With, ast.AsyncWith)) and any(
            _opens_no_grad(item.context_expr) for item in node.items
        ):
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == function.name):
            return True  # (delegates: checked as that method's own definition)
    return False


def _runs_parameter(
    function: ast.FunctionDef | ast.AsyncFunctionDef, position: int | None, keyword: str | None
) -> bool:
    """``function`` calls the parameter bound by the argument at ``position`` (after a
    ``self``/``cls``) or named ``keyword``, with autograd on (see
    :meth:`Project.runs_argument`): ``param(x)``, ``param.forward(x)``, ``param.decode_step(x)``,
    ``param.encoder(x)``."""
    params = [*function.args.posonlyargs, *function.args.args]
    if params and params[0].arg in ("self", "cls"):
        params = params[1:]
    names = {a.arg for a in (*params, *function.args.kwonlyargs)}
    if keyword is not None:
        param = keyword if keyword in names else None
    else:
        param = params[position].arg if position is not None and position < len(params) else None
    if param is None or _disables_grad(function):
        return False
    for call in ast.walk(function):
        func = getattr(call, "func", None)
        if isinstance(func, ast.Attribute) and (  # (model.forward(x), model.encoder(images))
                func.attr.split("_")[0] in FORWARD_METHODS or names_a_module(func.attr)):  # fmt: skip
            func = func.value
        if isinstance(call, ast.Call) and isinstance(func, ast.Name) and func.id == param:
            return True
    return False


def direct_calls(body: ast.AST | Iterable[ast.AST]) -> Iterator[ast.Call]:
    """Calls in ``body`` (a node's children, or a statement list) that are not inside a
    nested loop or function definition.

    Example:
        >>> loop = ast.parse("for x in xs:\\n    f(x)\\n    for y in x:\\n        g(y)").body[0]
        >>> [c.func.id for c in direct_calls(loop.body)]
        ['f']
    """
    stack = list(ast.iter_child_nodes(body)) if isinstance(body, ast.AST) else list(body)
    nested = (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef, ast.AsyncFunctionDef,
              ast.ClassDef, ast.Lambda)  # fmt: skip
    while stack:
        node = stack.pop()
        if isinstance(node, nested):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _calls_in_body(loop: ast.AST, nested: bool = True) -> Iterator[ast.Call]:
    """The calls in ``loop``'s body, not entering nested function or class definitions (nor
    nested loops, without ``nested``: :func:`direct_calls`)."""
    if not nested:
        yield from direct_calls(getattr(loop, "body", ()))
        return
    stack = list(getattr(loop, "body", ()))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def step_calls(loop: ast.AST) -> Iterator[ast.Call]:
    """The calls one iteration of step loop ``loop`` makes: in its body and in nested loops
    that are no step loops of their own (a rollout's ``for k in range(n_roll):`` that calls
    the loss at every unrolled step), not in nested step loops (an epoch loop's loader loop,
    which is indexed as a step loop itself) nor in nested function or class definitions.

    Example:
        >>> src = ("for b in loader:\\n    for k in range(n):\\n        f(b)\\n"
        ...        "    for v in val_loader:\\n        g(v)\\n    loss.backward()")
        >>> sorted(c.func.id for c in step_calls(ast.parse(src).body[0]) if isinstance(c.func, ast.Name))
        ['f', 'range']
    """
    stack = list(getattr(loop, "body", ()))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)) and step_loop(node):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def gated_calls(loop: ast.AST) -> set[int]:
    """The ids of the calls in ``loop``'s body under an ``if`` that looks like a logging or
    periodic gate (``if step % 100 == 0:``, ``if args.log_every ...``, ``if verbose:``): they
    run on some steps only. A gate around the backward or the optimizer step (DQN's ``if
    global_step % train_frequency == 0:``) is the training step itself: not one of them.

    Example:
        >>> loop = ast.parse("for b in loader:\\n    f(b)\\n    if i % 9 == 0:\\n        g(b)\\n").body[0]
        >>> sorted(c.func.id for c in ast.walk(loop) if id(c) in gated_calls(loop))
        ['g']
    """
    return {id(c) for gate in ast.walk(loop) if isinstance(gate, ast.If) and any(
                isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) or isinstance(n, ast.Name | ast.Attribute)
                and _LOG_GATE.search(n.id if isinstance(n, ast.Name) else n.attr) for n in ast.walk(gate.test))
            and not step_loop(gate)  # (`if step % train_freq == 0:` around the backward: the step)
            for s in gate.body for c in ast.walk(s) if isinstance(c, ast.Call)}  # fmt: skip


#: text a file with a step loop holds (a cheap test before parsing it for the loop index)
_STEP_MARKERS = re.compile(
    r"\.backward\(|\.step\(|^[ \t]*for\b[^\n]*(loader|batches|timesteps)"
    r"|def (training_step|compute_loss)\(", re.M | re.I
)


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return None
#: a loop over these runs once per step: a data loader's batches, a sampler's time steps
STEP_ITERABLES = re.compile(r"loader|batches|timesteps", re.IGNORECASE)


def step_loop(loop: ast.AST) -> bool:
    """A loop that runs a step per iteration: it calls ``.backward()`` or ``.step()`` in its
    body, or iterates a data loader or a sampler's time steps (not a loop over test cases,
    devices or a configuration list).

    Example:
        >>> step_loop(ast.parse("for x, y in train_loader:\\n    pass").body[0])
        True
        >>> step_loop(ast.parse("for k in range(n_gpu):\\n    x = f(k)").body[0])
        False
    """
    if isinstance(loop, (ast.For, ast.AsyncFor)):
        names = [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(loop.iter)
                 if isinstance(n, (ast.Name, ast.Attribute))]  # fmt: skip
        if any(STEP_ITERABLES.search(name) for name in names):
            return True
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        and n.func.attr in ("backward", "step") and not _SCHEDULER.search(ast.unparse(n.func.value))
        for statement in getattr(loop, "body", ()) for n in ast.walk(statement)
    )  # fmt: skip


#: a learning-rate scheduler's ``.step()``: once an epoch as often as once a step (an epoch loop
#: calling ``train(...)`` then ``scheduler.step()`` is no step loop)
_SCHEDULER = re.compile(r"(?i)sched|(^|_)lr($|_)")


def method_calls_in_step_loops(path: str, tree: ast.Module) -> dict[tuple[str, str], tuple[str, int]]:
    """``(class, method) -> (file name, line)``: calls ``obj.method(...)`` inside a step loop
    (:func:`step_loop`, not under a logging gate) of a function (or the module's top level)
    that assigns ``obj`` from ``Class(...)`` (``agent = DQNAgent(...)``, then
    ``agent.learn(batch)`` every step), or ``self.obj.method(...)`` in a method a framework
    runs every step, ``self.obj`` made from ``Class(...)`` in its class (Lightning's
    ``self.model.loss(obs, fut)`` in ``training_step``).

    Example:
        >>> src = ("def main(env):\\n    agent = Agent(4)\\n    for t in range(9):\\n"
        ...        "        env.step(agent.act())\\n        agent.learn()\\n")
        >>> sorted(method_calls_in_step_loops("train.py", ast.parse(src)))
        [('Agent', 'act'), ('Agent', 'learn')]
    """
    found: dict[tuple[str, str], tuple[str, int]] = {}
    scopes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]
    for scope in scopes:
        body = [s for s in scope.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                              ast.ClassDef))]  # fmt: skip
        nodes = [n for s in body for n in ast.walk(s)]
        classes: dict[str, set[str]] = {}  # (model = Net(...), then model = DDP(model): both)
        for node in nodes:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            target = node.targets[0]  # (sim, reg = NCC(), Grad(): paired)
            pairs = zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple) and isinstance(
                node.value, ast.Tuple) and len(target.elts) == len(node.value.elts) else [(target, node.value)]  # fmt: skip
            for name, value in pairs:
                if not isinstance(name, ast.Name):
                    continue
                # (Agent(...).to(device): the class's instance still)
                while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and \
                        isinstance(value.func.value, ast.Call):
                    value = value.func.value
                made = value.func if isinstance(value, ast.Call) else None
                last = made.id if isinstance(made, ast.Name) else getattr(made, "attr", "")
                if last[:1].isupper():
                    classes.setdefault(name.id, set()).add(last)
        for loop in (n for n in nodes if isinstance(n, (ast.For, ast.AsyncFor, ast.While))):
            if not classes or not step_loop(loop):
                continue
            gated = gated_calls(loop)  # (`if step % 100 == 0: agent.report()`: not every step)
            for call in _calls_in_body(loop):
                func = call.func
                if id(call) in gated:
                    continue
                held = func.value if isinstance(func, ast.Attribute) else None
                if isinstance(held, ast.Attribute) and held.attr == "module":
                    held = held.value  # (DDP's model.module.frame_features(x): the wrapped one)
                if isinstance(held, ast.Name) and held.id in classes:
                    for made in sorted(classes[held.id]):
                        found.setdefault((made, func.attr), (Path(path).name, call.lineno))
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        held = {ast.unparse(t): v.func.id for n in ast.walk(cls) if isinstance(n, ast.Assign)
                and isinstance(v := n.value, ast.Call) and isinstance(v.func, ast.Name)
                and v.func.id[:1].isupper() for t in n.targets
                if isinstance(t, ast.Attribute) and dotted(t.value) == "self"}  # fmt: skip
        for step in (m for m in cls.body if held and framework_step_method(cls, m)):
            for call in (c for c in ast.walk(step) if isinstance(c, ast.Call)):
                made = held.get(ast.unparse(call.func.value)) if isinstance(
                    call.func, ast.Attribute) else None  # fmt: skip
                if made is not None:  # (Lightning's self.model.loss(...) in training_step)
                    found.setdefault((made, call.func.attr), (Path(path).name, call.lineno))
    return found


#: a model wrapped in DistributedDataParallel (also imported as DDP)
_WRAPS_DDP = re.compile(r"\bDistributedDataParallel\s*\(|\bDDP\s*\(")


def wraps_ddp_around(text: str, module: str, function: str) -> bool:
    """The source ``text`` wraps a model in DistributedDataParallel and imports ``function``
    from ``module`` (``from engine import train_one_epoch``) or calls ``module.function(``.

    Example:
        >>> wraps_ddp_around("from engine import train\\nm = DDP(m)\\n", "engine", "train")
        True
    """
    name, where = re.escape(function), re.escape(module)
    imports = re.compile(rf"(?m)^\s*from\s+[\w.]*\b{where}\s+import\b[^\n]*\b{name}\b"
                         rf"|\b{where}\.{name}\s*\(")  # fmt: skip
    return bool(_WRAPS_DDP.search(text) and imports.search(text))

"""TD511: a constant tensor built from a Python literal on every call or iteration.

``torch.tensor([0.485, 0.456, 0.406], device=x.device)`` in a ``forward`` (in any loop of it
too: a loss's loop over the images of the batch), inside a step loop
(it trains, or iterates a data loader or a sampler's time steps: not a loop over test cases or
devices), or in a function or method that a ``forward`` of the file or a step loop of the
project calls (pytorch/examples fast_neural_style's
``normalize_batch``: ``batch.new_tensor([0.485, 0.456, 0.406])`` twice per call, four calls per
step) allocates a tensor and, on a GPU, copies it from pageable host memory every time: a
blocking host-to-device copy and an allocation per call for a value that never changes (under
torch.compile, a constant rebuilt in the graph). Built once, as a buffer
(``self.register_buffer("mean", ...)`` in ``__init__``: it follows ``.to(device)`` and is saved
with the model) or a constant moved to the device before the loop, it costs nothing per step.

Only literals count: a list of numbers (nested lists and tuples, negative numbers included),
two or more of them, or a single number put on a device (``torch.tensor(1.0,
device=x.device)``, ``.cuda()``, ``.to(...)``, ``x.new_tensor(0.5)``: a copy to the device for a
value a Python number gives as well, since it broadcasts), or a name the module binds once to
such a list (``SIGMAS = [0.26, 0.25, ...]``), or an attribute its class binds once, in
``__init__``, to such a list or to a parameter whose default is one (``self.q = quantiles`` of
``quantiles=(0.1, 0.5, 0.9)``; nothing rebinds or mutates it; a number so bound, put on a device:
wav2vec 2.0's ``torch.tensor(self.logit_temp, device=...)``), or a single number handed straight to a torch
math function (``torch.log(torch.tensor(2.0))``, ``torch.sqrt(torch.tensor(self.d_k))``,
``torch.log(torch.tensor(float(max_period)))``: two
tensor ops per call for what ``math.log`` / ``math.sqrt`` give as a Python float); a tensor
built from variables is data, not a constant. A function counts as called per step up to three calls from a
``forward`` of the file or from a step loop of the project (``forward`` -> ``_embed`` ->
``_positions``).
"""

from __future__ import annotations

import ast

from torchdoctor.lint.denoising_loops import SAMPLING_FUNCTION, counts_down
from torchdoctor.lint.per_step import PerStepCalls
from torchdoctor.lint.project_scan import step_loop
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.sampling_loops import sampling_loop
from torchdoctor.lint.tensors import numbers_in_literal
from torchdoctor.lint.visitor import FOR, FUNCTIONS, RuleVisitor, dotted, method_name

RULES = (
    Rule(
        "TD511",
        "constant-tensor-per-call",
        "info",
        "a constant tensor built from a Python literal (torch.tensor([0.485, 0.456, 0.406])) "
        "in a forward, a step loop (over a loader's batches, a sampler's time steps, or one "
        "calling backward or step), or a function a forward or such a loop calls: an allocation "
        "and, on a GPU, a blocking host-to-device copy on every call for a value that never "
        "changes (also one number through a torch math function, torch.log(torch.tensor(2.0)): "
        "math.log gives it as a float)",
        "build it once: self.register_buffer('mean', torch.tensor([...])) in __init__ (it "
        "follows .to(device)), or a constant moved to the device before the loop",
        "class Norm(nn.Module):\n    def forward(self, x):\n"
        "        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device)\n"
        "        return x - mean.view(-1, 1, 1)",
        "class Norm(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1))\n"
        "    def forward(self, x):\n        return x - self.mean",
    ),
)

#: calls that build a tensor from their first argument's data
_BUILDERS = frozenset(
    {"torch.tensor", "torch.as_tensor", "torch.Tensor", "torch.FloatTensor",
     "torch.LongTensor", "torch.DoubleTensor", "torch.IntTensor", "torch.BoolTensor",
     "torch.cuda.FloatTensor", "torch.cuda.LongTensor"}
)  # fmt: skip
_LOOPS = (*FOR, ast.While)
#: list methods that change a list in place
_MUTATORS = frozenset({"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"})


class ConstantRules(PerStepCalls, RuleVisitor):
    """TD511 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\nclass Norm(torch.nn.Module):\\n    def forward(self, x):\\n"
        ...        "        m = torch.tensor([0.5, 0.5, 0.5], device=x.device)\\n"
        ...        "        return x - m.view(-1, 1, 1)\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD511']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"[tT]ensor\(",),)

    def visit_Call(self, node: ast.Call) -> None:
        new_tensor = method_name(node) == "new_tensor"
        built = new_tensor or bool(self.callee(node) & _BUILDERS)
        numbers = numbers_in_literal(node.args[0]) if built and node.args else 0
        if built and node.args and isinstance(node.args[0], ast.Name) and not numbers:
            numbers = self._module_constant(node.args[0].id)  # (torch.tensor(SIGMAS, ...))
            numbers = numbers if numbers >= 2 else 0
        elif built and node.args and isinstance(node.args[0], ast.Attribute) and not numbers:
            numbers = self._attribute_constant(node.args[0])  # (torch.tensor(self.quantiles);
            # one number only on a device: torch.tensor(self.logit_temp, device=x.device))
        elif built and node.args and not numbers:  # ([HARTREE_TO_MEV / 1000.0]: arithmetic)
            numbers = self._constant_numbers(node.args[0])
        math = _math_of(node, self.parent(node), numbers, self.callee) if built else None
        scalar = numbers == 1 and (new_tensor or _on_device(node, self.parent(node)))
        if numbers < 2 and not scalar and math is None:
            return
        where = self._per_call(node)
        if where is None:
            return
        if math is not None:  # (a CPU scalar: no copy, but two tensor ops for a float)
            self.report(
                node,
                "TD511",
                f"`{self.code_of(self.parent(node))}` builds a one-number tensor and runs a "
                f"torch op on it {where}: two tensor allocations and dispatches per call for a "
                f"value that never changes; `math.{math}(...)` gives it as a Python float, "
                "which broadcasts as it is (or compute it once in `__init__`)",
            )
            return
        fix = (
            "a Python number broadcasts as it is (`x * 2.0`), or build it once"
            if scalar
            else "build it once"
        )
        self.report(
            node,
            "TD511",
            f"`{self.code_of(node)}` builds a constant tensor from a literal {where}: an "
            "allocation and, on a GPU, a blocking host-to-device copy each time for a value "
            f"that never changes; {fix}: `self.register_buffer(...)` in `__init__` (it "
            "follows `.to(device)`), or a constant moved to the device before the loop",
        )

    def _constant_numbers(self, node: ast.AST, bound: frozenset[str] = frozenset()) -> int:
        """How many numbers a list/tuple literal holds whose items are arithmetic on numbers
        and on the module's number constants (``[HARTREE_TO_MEV / 1000.0, 2 * PI]``, and
        ``math.log(0.1)`` of such numbers); 0 when
        an item is anything else. A list comprehension of such arithmetic on its variables
        over ``range(...)`` of such numbers (``[2.3125 + 0.3125 * i for i in range(BINS -
        1)]``: distogram bin edges) counts as two or more; ``bound`` holds its variables.

        Example:
            >>> from torchdoctor.lint import lint_source
            >>> src = ("import torch\\nC = 27.2\\ndef train(model, loader, dev):\\n"
            ...        "    for x in loader:\\n        s = torch.tensor([C / 1000.0], device=dev)\\n"
            ...        "        (model(x) * s).sum().backward()\\n")
            >>> [f.code for f in lint_source(src)]
            ['TD511']
        """
        if isinstance(node, (ast.List, ast.Tuple)):
            counts = [self._constant_numbers(e, bound) for e in node.elts]
            return sum(counts) if counts and all(counts) else 0
        if isinstance(node, ast.ListComp) and not bound:
            names = frozenset(n.id for g in node.generators for n in ast.walk(g.target)
                              if isinstance(n, ast.Name))  # fmt: skip
            ranges = all(isinstance(g.iter, ast.Call) and dotted(g.iter.func) == "range" and not
                         g.ifs and g.iter.args and all(self._constant_numbers(a) == 1 for a in
                                                       g.iter.args) for g in node.generators)  # fmt: skip
            return 2 if ranges and self._constant_numbers(node.elt, names) == 1 else 0
        if isinstance(node, ast.UnaryOp):
            return self._constant_numbers(node.operand, bound)
        if isinstance(node, ast.BinOp):
            sides = self._constant_numbers(node.left, bound), self._constant_numbers(node.right, bound)
            return 1 if sides == (1, 1) else 0
        if isinstance(node, ast.Name) and node.id in bound:
            return 1  # (the comprehension's own variable: a number of its range)
        if isinstance(node, ast.Name):
            return 1 if self._module_constant(node.id) == 1 and self._scalar_constant(node.id) else 0
        if isinstance(node, ast.Attribute) and self.qualified_names(node) & _MATH_CONSTANTS:
            return 1  # ([0.01 / math.pi]: a PINN's viscosity)
        if isinstance(node, ast.Call) and node.args and not node.keywords and all(
            self._constant_numbers(a, bound) == 1 for a in node.args
        ) and self.callee(node) & _MATH_CALLS:
            return 1  # ([2.0 * math.log(0.1)]: a latent ODE's fixed noise log-variance)
        return numbers_in_literal(node)

    def _attribute_constant(self, attr: ast.Attribute) -> int:
        """How many numbers ``self.name`` holds when its class binds it once, in ``__init__``,
        to a list/tuple literal or to a parameter of ``__init__`` whose default is one and
        that ``__init__`` never rebinds (``def __init__(self, quantiles=(0.1, 0.5, 0.9))`` then
        ``self.q = quantiles``), and nothing mutates it; 0 otherwise.

        Example:
            >>> from torchdoctor.lint import lint_source
            >>> src = ("import torch\\nclass Q(torch.nn.Module):\\n"
            ...        "    def __init__(self, qs=(0.1, 0.9)):\\n        self.qs = qs\\n"
            ...        "    def forward(self, x):\\n        return x * torch.tensor(self.qs)\\n")
            >>> [f.code for f in lint_source(src)]
            ['TD511']
        """
        owner = self.parent(self.enclosing_scope(attr))
        if not (isinstance(attr.value, ast.Name) and attr.value.id == "self"
                and isinstance(owner, ast.ClassDef)):  # fmt: skip
            return 0
        values, init = [], None
        for node in ast.walk(owner):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    dotted(node.func.value) == f"self.{attr.attr}" and node.func.attr in _MUTATORS):
                return 0  # (self.qs.append(...))
            if isinstance(node, ast.Attribute) and dotted(node) == f"self.{attr.attr}" and (
                    not isinstance(node.ctx, ast.Load)):  # fmt: skip
                assign, function = self.parent(node), self.enclosing_scope(node)
                while isinstance(assign, ast.Tuple):
                    assign = self.parent(assign)
                if not (isinstance(assign, ast.Assign) and getattr(function, "name", "") == "__init__"):
                    return 0
                init = function
                values.append(_paired(assign, node))
        if len(values) != 1 or values[0] is None:
            return 0
        value = values[0]
        if isinstance(value, ast.Name):
            args = init.args  # type: ignore[union-attr]
            params = [*args.posonlyargs, *args.args]
            defaults = dict(zip([a.arg for a in params][len(params) - len(args.defaults):],
                                args.defaults))  # fmt: skip
            rebound = [n for n in ast.walk(init) if isinstance(n, ast.Name) and n.id == value.id
                       and not isinstance(n.ctx, ast.Load)]  # fmt: skip
            value = defaults.get(value.id) if not rebound else None
        if isinstance(value, ast.Constant | ast.UnaryOp) and numbers_in_literal(value) == 1:
            return 1  # (a number: `logit_temp=0.1`, then `self.logit_temp = logit_temp`)
        return numbers_in_literal(value) if isinstance(value, (ast.List, ast.Tuple)) else 0

    def _scalar_constant(self, name: str) -> bool:
        """The module binds ``name`` to a number (not a list of one)."""
        tree = self.context.tree
        return any(
            isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
            and numbers_in_literal(n.value) == 1 and not isinstance(n.value, (ast.List, ast.Tuple))
            for n in (tree.body if tree is not None else ())
        )  # fmt: skip

    def _module_constant(self, name: str) -> int:
        """How many numbers the list literal holds that the module binds ``name`` to, at its
        top level, when nothing else in the file binds or mutates that name (``SIGMAS = [0.26,
        ...]``, then ``torch.tensor(SIGMAS, device=x.device)`` in a forward); 0 otherwise.

        Example:
            >>> from torchdoctor.lint import lint_source
            >>> src = ("import torch\\nMEAN = [0.5, 0.4]\\nclass N(torch.nn.Module):\\n"
            ...        "    def forward(self, x):\\n        return x - torch.tensor(MEAN)\\n")
            >>> [f.code for f in lint_source(src)]
            ['TD511']
        """
        key = ("module constants",)
        table = self.context.cache.get(key)
        if table is None:
            tree = self.context.tree or ast.Module(body=[], type_ignores=[])
            stores: dict[str, int] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
                    stores[node.id] = stores.get(node.id, 0) + 1
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        isinstance(node.func.value, ast.Name) and node.func.attr in _MUTATORS:
                    stores[node.func.value.id] = 2  # (SIGMAS.append(...): not a constant)
            table = {t.id: numbers_in_literal(n.value) for n in tree.body
                     if isinstance(n, ast.Assign) for t in n.targets
                     if isinstance(t, ast.Name) and stores.get(t.id) == 1}  # fmt: skip
            self.context.cache[key] = table
        if name in table:
            return table[name]
        project = self.context.project
        imported = name in self.context.names.imports  # (from kpt_ops import SIGMAS)
        return project.module_numbers(name) if imported and project is not None else 0  # type: ignore[attr-defined]

    def _per_call(self, node: ast.Call) -> str | None:
        """Where it runs again and again: ``in every iteration of the loop at line N``, ``on
        every call of Cls.forward``, ``on every call of fn (called by Cls.forward)``, ``on
        every call of fn (called in a loop at file:line)``; None otherwise (module level,
        ``__init__``, a function run once)."""
        loops = [lp for lp in self.enclosing_loops(node) if isinstance(lp, _LOOPS)]
        scope = self.enclosing_scope(node)
        sampler = isinstance(scope, FUNCTIONS) and bool(SAMPLING_FUNCTION.search(scope.name))
        steps = [lp for lp in loops if step_loop(lp) or (  # (a sampler's steps, TD601's loops)
            isinstance(lp, ast.For) and (sampling_loop(self, lp) or sampler and counts_down(lp.iter)))]
        if steps:
            return f"in every iteration of the loop at line {steps[-1].lineno}"
        owner = self.parent(scope)
        forward = isinstance(scope, FUNCTIONS) and scope.name == "forward" and isinstance(
            owner, ast.ClassDef)  # fmt: skip
        if loops and forward:  # (a loss's loop over the images of the batch, every call)
            return (f"in every iteration of the loop at line {loops[-1].lineno}, on every "
                    f"call of `{owner.name}.forward`")  # type: ignore[union-attr]
        if loops:
            return None  # (a loop over test cases, devices, a configuration: not per step)
        if not isinstance(scope, (*FUNCTIONS, ast.Lambda)):
            return None  # (a lambda: per_step_call follows one the module binds to a name)
        if forward:
            return f"on every call of `{owner.name}.forward`"  # type: ignore[union-attr]
        return self.per_step_call(scope)


#: named numbers of the math, NumPy and torch modules
_MATH_CONSTANTS = frozenset(f"{m}.{c}" for m in ("math", "numpy", "torch")
                            for c in ("pi", "e", "tau", "inf"))  # fmt: skip
#: torch functions of one number that the math module computes on a Python float
_MATH = frozenset({"log", "log2", "log10", "log1p", "exp", "expm1", "sqrt", "sin",
                   "cos", "tan", "tanh", "atan", "erf", "lgamma"})  # fmt: skip
#: the same functions on Python numbers (math.log(0.1)): a number of a literal's arithmetic
_MATH_CALLS = frozenset(f"{m}.{f}" for m in ("math", "numpy") for f in _MATH)


def _math_of(call: ast.Call, parent: ast.AST | None, numbers: int, callee) -> str | None:
    """``torch.log(torch.tensor(2.0))`` / ``torch.sqrt(torch.tensor(self.d_k))``: the name of
    the math function applied to a tensor built from one number or one
    attribute; None otherwise.

    Example:
        >>> call = ast.parse("torch.log(torch.tensor(2.0))", mode="eval").body
        >>> _math_of(call.args[0], call, 1, lambda c: {"torch." + c.func.attr})
        'log'
        >>> call = ast.parse("torch.log(torch.tensor(float(period)))", mode="eval").body
        >>> _math_of(call.args[0], call, 0, lambda c: {"torch." + c.func.attr})
        'log'
    """
    arg = call.args[0] if len(call.args) == 1 else None
    single = numbers == 1 or (
        isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "self"
    ) or (  # (torch.tensor(float(max_period)): a Python number by construction)
        isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name)
        and arg.func.id in ("float", "int") and len(arg.args) == 1 and not arg.keywords
    )  # fmt: skip
    if not (single and isinstance(parent, ast.Call) and parent.args and parent.args[0] is call):
        return None
    names = {name.rsplit(".", 1)[-1] for name in callee(parent) if name.startswith("torch.")}
    found = sorted(names & _MATH)
    if not found:
        return None
    return found[0]


def _on_device(call: ast.Call, parent: ast.AST | None) -> bool:
    """Whether the tensor ``call`` builds is put on a device other than the CPU: a
    ``device=`` argument other than ``"cpu"``/``None``, or ``.cuda()`` / ``.to(...)`` applied
    to it.

    Example:
        >>> call = ast.parse("torch.tensor(1.0, device=x.device)", mode="eval").body
        >>> _on_device(call, None), _on_device(ast.parse("torch.tensor(1.0)", mode="eval").body, None)
        (True, False)
    """
    for keyword in call.keywords:
        if keyword.arg == "device":
            value = keyword.value
            return not (isinstance(value, ast.Constant) and value.value in (None, "cpu"))
    return isinstance(parent, ast.Attribute) and parent.attr in ("cuda", "to")


def _paired(assign: ast.Assign, target: ast.AST) -> ast.AST | None:
    """The value ``assign`` gives ``target`` (``self.h, self.q = horizon, quantiles``: the
    paired item); None when it cannot be told (unpacking a call)."""
    if any(t is target for t in assign.targets):
        return assign.value
    for t in assign.targets:
        if isinstance(t, ast.Tuple) and isinstance(assign.value, ast.Tuple) and len(t.elts) == len(
                assign.value.elts):  # fmt: skip
            for each, value in zip(t.elts, assign.value.elts):
                if each is target:
                    return value
    return None

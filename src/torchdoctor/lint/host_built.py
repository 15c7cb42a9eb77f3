"""TD204 across helpers: a tensor one function of the file builds on the host (no device
given to its factory) and another copies to the device on every step. 3D Gaussian
Splatting's ``ssim()`` calls ``window = create_window(11, channel)`` and then
``window.cuda(img1.get_device())`` on every training iteration; the factory,
``torch.Tensor([exp(...) for x in range(11)])`` in ``gaussian()``, is two calls away. A
mixin of :class:`torchdoctor.lint.rules_device.DeviceRules`.
"""

from __future__ import annotations

import ast

from torchdoctor.lint.visitor import FUNCTIONS, dotted, method_name

#: torch factories that make a tensor on the host unless given a device
_HOST_FACTORIES = frozenset(
    f"torch.{n}" for n in ("randn", "rand", "randint", "randperm", "zeros", "ones", "full",
                           "empty", "arange", "linspace", "logspace", "eye", "hann_window",
                           "hamming_window", "blackman_window", "from_numpy")
)  # fmt: skip
#: torch constructors of Python data: on the host when given a literal (a tensor keeps its device)
_FROM_DATA = frozenset({"torch.tensor", "torch.as_tensor", "torch.Tensor", "torch.FloatTensor",
                        "torch.LongTensor"})  # fmt: skip
#: methods of a host tensor whose result stays on the host
_STAYS = frozenset({"unsqueeze", "squeeze", "view", "reshape", "expand", "repeat", "t", "mm",
                    "matmul", "outer", "float", "double", "half", "long", "int", "bool",
                    "contiguous", "flatten", "permute", "transpose", "sum", "mean", "clone",
                    "repeat_interleave", "exp", "sqrt", "abs", "cumsum", "flip"})  # fmt: skip
#: calls that hand back their argument's tensor (the old autograd wrapper)
_WRAPPERS = frozenset({"Variable", "torch.autograd.Variable"})
#: the nodes of a literal list of numbers
_LITERAL = (ast.List, ast.Tuple, ast.Constant, ast.UnaryOp, ast.USub, ast.UAdd, ast.Load)
#: how many assignments and calls the search follows back from the copy
_DEPTH = 8


class HostBuiltMoves:
    """:meth:`check_helper_built_move` for the device rules' visitor.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef window(n):\\n    return torch.hann_window(n).unsqueeze(0)\\n"
        ...        "class M(torch.nn.Module):\\n    def forward(self, x):\\n"
        ...        "        w = window(x.shape[-1])\\n        return x * w.to(x.device)\\n")
        >>> [(f.code, f.line) for f in lint_source(src)]
        [('TD204', 7)]
    """

    def check_helper_built_move(self, move: ast.Call) -> None:
        """TD204 for ``x.cuda()`` / ``x.to(device)`` where ``x`` is what a module-level
        function of this file returns, built on the host, and the copy runs every step."""
        receiver = move.func.value  # type: ignore[attr-defined]
        scope = self.enclosing_scope(move)  # type: ignore[attr-defined]
        if not isinstance(scope, FUNCTIONS) or self.device_of_move(move) is None:  # type: ignore[attr-defined]
            return
        values = [receiver]
        if isinstance(receiver, ast.Name):
            values = [v for v in self.assigned_values(scope, receiver.id)  # type: ignore[attr-defined]
                      if receiver.id not in {n.id for n in ast.walk(v) if isinstance(n, ast.Name)}]  # fmt: skip
        builders = [self._builder(v) for v in values]
        if isinstance(receiver, ast.Name) and values and all(map(_shape_factory, values)):
            self._report_named_factory(move, receiver.id, _shape_factory(values[0]))  # type: ignore[arg-type]
            return  # (PointNet's I = torch.eye(d)[None]; if x.is_cuda: I = I.cuda())
        if not values or any(b is None for b in builders):
            return
        if not all(self._host_built(b, b, _DEPTH) for b in builders):  # type: ignore[arg-type]
            return
        where = self.moved_every_step(move)  # type: ignore[attr-defined]
        if where is None:
            return
        name = builders[0].name  # type: ignore[union-attr]
        self.report(  # type: ignore[attr-defined]
            move,
            "TD204",
            f"`{self.code_of(move)}` copies the tensor `{name}(...)` builds on the host to the "  # type: ignore[attr-defined]
            f"device {where}: give `{name}` the device and pass it to its factory "
            "(`device=...`), or build the tensor once and keep it",
        )

    def _report_named_factory(self, move: ast.Call, name: str, factory: ast.Call) -> None:
        where = self.moved_every_step(move)  # type: ignore[attr-defined]
        if where is not None:
            self.report(  # type: ignore[attr-defined]
                move,
                "TD204",
                f"`{self.code_of(move)}` copies `{name}`, which `{self.code_of(factory)}` "  # type: ignore[attr-defined]
                f"builds on the host, to the device {where}: " + (
                    f"create it there, `{self.code_of(factory.func)}(..., device=...)`"  # type: ignore[attr-defined]
                    if dotted(factory.func) != "torch.from_numpy" else "build the constant "
                    "once, `self.register_buffer(...)` in `__init__` (it follows `.to(device)`)"),
            )

    def _builder(self, value: ast.AST) -> ast.FunctionDef | None:
        """The module-level function of this file that ``value`` calls (``create_window(11,
        c)``, or a method of its result: ``create_window(11, c).float()``); None otherwise."""
        while isinstance(value, ast.Call) and method_name(value) in _STAYS:
            value = value.func.value  # type: ignore[attr-defined]
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)):
            return None
        tree = self.context.tree  # type: ignore[attr-defined]
        return next((f for f in getattr(tree, "body", ()) if isinstance(f, ast.FunctionDef)
                     and f.name == value.func.id), None)  # fmt: skip

    def _host_built(self, expr: ast.AST, scope: ast.AST, depth: int) -> bool:
        """``expr`` (a function: each of its ``return`` values) is a tensor made on the host:
        a factory given no device, a list literal's tensor, or host-only arithmetic and
        methods of one, through the names of ``scope`` and the file's functions it calls."""
        if depth <= 0:
            return False
        again = lambda e: self._host_built(e, scope, depth - 1)  # noqa: E731
        if isinstance(expr, ast.FunctionDef):
            if _filled_in_a_loop(expr):  # (wav2vec 2.0's span mask: one copy beats the
                return False  # loop's writes made on the device, a kernel each)
            returns = [r.value for r in ast.walk(expr) if isinstance(r, ast.Return) and r.value]
            return bool(returns) and all(self._host_built(r, expr, depth - 1) for r in returns)
        if isinstance(expr, ast.Name):
            values = self.assigned_values(scope, expr.id)  # type: ignore[attr-defined]
            fresh = [v for v in values if expr.id not in {n.id for n in ast.walk(v)
                                                          if isinstance(n, ast.Name)}]  # fmt: skip
            return bool(fresh) and all(again(v) for v in values if v in fresh)
        if isinstance(expr, ast.BinOp):
            sides = [s for s in (expr.left, expr.right) if not isinstance(s, ast.Constant)]
            return bool(sides) and all(self._host_built(s, scope, depth) for s in sides)
        if not isinstance(expr, ast.Call):
            return False
        names = self.callee(expr)  # type: ignore[attr-defined]
        if any(k.arg == "device" for k in expr.keywords):
            return False
        if names & _HOST_FACTORIES:
            return True
        if names & _FROM_DATA:
            return bool(expr.args) and (isinstance(expr.args[0], (ast.List, ast.Tuple)) or (
                _constant_comprehension(expr.args[0])))
        if isinstance(expr.func, ast.Attribute) and method_name(expr) in _STAYS and not (
                dotted(expr.func.value) or "").startswith("torch"):  # fmt: skip
            return self._host_built(expr.func.value, scope, depth)  # (a method: no deeper)
        builder = self._builder(expr)
        return builder is not None and builder is not scope and self._host_built(builder, builder, depth - 1)


def _constant_comprehension(expr: ast.AST) -> bool:
    """A list comprehension over ``range(...)`` or a literal list (3DGS's ``[exp(-(x - 5) ** 2
    / s) for x in range(11)]``): the same numbers every call, a constant; not one over data
    (``[class_map[int(v)] for v in y]``: a batch's labels, which must reach the device anyway).

    Example:
        >>> [_constant_comprehension(ast.parse(c).body[0].value)
        ...  for c in ("[x * x for x in range(n)]", "[m[int(v)] for v in y]", "[1, 2]")]
        [True, False, False]
    """
    return isinstance(expr, ast.ListComp) and all(
        (isinstance(g.iter, ast.Call) and dotted(g.iter.func) == "range")
        or isinstance(g.iter, (ast.List, ast.Tuple)) for g in expr.generators
    )  # fmt: skip


def _shape_factory(value: ast.AST) -> ast.Call | None:
    """The factory of ``value`` when it is a torch factory given sizes and no device
    (``torch.eye(d)[None, :, :]``, ``torch.zeros(n).float()``), or given a literal array
    (PointNet's STN3d: ``Variable(torch.from_numpy(np.array([1, 0, 0, ...]).astype(np.float32)))``),
    not one given data (``torch.from_numpy(batch)``: a copy the data needs).

    Example:
        >>> ast.unparse(_shape_factory(ast.parse("torch.eye(d)[None, :, :]").body[0].value))
        'torch.eye(d)'
        >>> _shape_factory(ast.parse("torch.from_numpy(a)").body[0].value) is None
        True
        >>> _shape_factory(ast.parse("torch.from_numpy(np.array([1, 0]))").body[0].value) is None
        False
    """
    while isinstance(value, ast.Subscript) or (isinstance(value, ast.Call) and (
            method_name(value) in _STAYS or dotted(value.func) in _WRAPPERS)):  # fmt: skip
        value = value.value if isinstance(value, ast.Subscript) else (  # type: ignore[attr-defined]
            value.func.value if method_name(value) in _STAYS else value.args[0])  # type: ignore[attr-defined]
    if isinstance(value, ast.Call) and dotted(value.func) == "torch.from_numpy" and value.args:
        array = value.args[0]
        while isinstance(array, ast.Call) and method_name(array) in ("astype", "flatten", "reshape"):
            array = array.func.value  # type: ignore[attr-defined]  # (STNkd's np.eye(k).flatten())
        made = dotted(array.func) or "" if isinstance(array, ast.Call) else ""
        literal = made.endswith((".eye", ".identity")) or made.endswith(".array") and (
            bool(array.args) and isinstance(array.args[0], ast.List | ast.Tuple) and all(  # type: ignore[attr-defined]
                isinstance(n, _LITERAL) for n in ast.walk(array.args[0])))  # type: ignore[attr-defined]
        return value if literal else None
    if isinstance(value, ast.Call) and dotted(value.func) in _HOST_FACTORIES - {"torch.from_numpy"} and not any(
            k.arg in ("device", "pin_memory", "generator") for k in value.keywords):  # fmt: skip
        return value  # (not a pinned staging buffer, nor a draw from a CPU generator)
    return None


def _filled_in_a_loop(function: ast.FunctionDef) -> bool:
    """``function`` writes into a tensor item by item in a Python loop (``mask[b, s:s + span]
    = True`` for each sampled span): built on the host, it is one copy to the device; built
    there, each write would be a kernel launch.

    Example:
        >>> src = "def m(b):\\n    x = torch.zeros(b)\\n    for i in range(b):\\n        x[i] = 1\\n    return x\\n"
        >>> _filled_in_a_loop(ast.parse(src).body[0])
        True
    """
    return any(isinstance(loop, (ast.For, ast.While)) and any(
        isinstance(a, (ast.Assign, ast.AugAssign)) and any(
            isinstance(t, ast.Subscript) for t in getattr(a, "targets", [getattr(a, "target", None)]))
        for a in ast.walk(loop)) for loop in ast.walk(function))  # fmt: skip

"""What a linted expression holds: a tensor or a Python number (statically unknowable, so
decided from the calls that made it and the names it has, kept conservative)."""

from __future__ import annotations

import ast

from torchdoctor.lint.host_lists import HostLists
from torchdoctor.lint.returned_values import returns_only
from torchdoctor.lint.syntax import same_file_callee
from torchdoctor.lint.tensors import (
    NOT_TENSOR_SUFFIX,
    NOT_TENSORS,
    REDUCTIONS,
    SCALAR_CASTS,
    TENSOR_NAME,
    TORCH_TENSOR_FUNCTION,
)
from torchdoctor.lint.visitor import (
    COMPREHENSIONS,
    FUNCTIONS,
    HOST_COPY_METHODS,
    MODEL_NAME,
    dotted,
    method_name,
)

#: tensor methods NumPy arrays and Python objects do not have
TORCH_ONLY_METHODS = frozenset(
    {"float", "half", "bfloat16", "unsqueeze", "detach", "cuda", "softmax", "log_softmax",
     "masked_fill", "type_as", "norm", "clamp", "eq", "ne", "gt", "lt", "ge", "le", "sigmoid",
     "relu", "tanh", "contiguous", "permute", "exp", "log"}
)  # fmt: skip

#: libraries whose results are host data (NumPy arrays, Python objects), never tensors
_HOST_LIBRARIES = ("numpy.", "scipy.", "sklearn.", "pandas.")
#: torch functions that make a new tensor on the CPU unless given a device (or a default
#: device is set): reading one back is no host-device sync
HOST_FACTORIES = frozenset(f"torch.{n}" for n in ("randint", "rand", "randn", "randperm", "zeros",
                           "ones", "empty", "full", "arange", "linspace", "tensor", "as_tensor"))  # fmt: skip


#: methods that return the tensor they are called on, or a copy (a tensor if it was one)
_SAME_TENSOR = frozenset({"detach", "clone", "contiguous"})

class TensorValues(HostLists):
    """Mixin for a :class:`~torchdoctor.lint.visitor.RuleVisitor`: is an expression a tensor?

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("for x, y in loader:\\n    model(x).sum().backward()\\n    opt.step()\\n"
        ...        "    cov = (y == 1).float().mean()\\n    print(f'{cov:.2f}')\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD201']
    """

    def looks_like_tensor(self, expr: ast.AST) -> bool:
        """Heuristic: the expression is a tensor (statically unknowable; kept conservative).
        A negation or a ``.detach()`` / ``.clone()`` of one is one too (``-d_loss.detach()``)."""
        while True:
            if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub | ast.UAdd):
                expr = expr.operand
            elif isinstance(expr, ast.Call) and method_name(expr) in _SAME_TENSOR and not (
                    expr.args or expr.keywords):  # fmt: skip
                expr = expr.func.value  # type: ignore[attr-defined]
            else:
                break
        if isinstance(expr, ast.Call):
            if any(
                TORCH_TENSOR_FUNCTION.match(n) and n not in NOT_TENSORS for n in self.callee(expr)
            ):
                return True
            if any(n.startswith(("builtins.", "math.", "numpy.")) for n in self.callee(expr)):
                return False  # (`builtins.min(a, b)`: Python's, not a reduction)
            name = method_name(expr)
            return name in REDUCTIONS and not self._on_host_data(expr)
        name = dotted(expr)
        if name is None and isinstance(expr, ast.Subscript):
            return self._model_output_entry(expr)
        last = (name or "").rsplit(".", 1)[-1]
        if not (TENSOR_NAME.search(last) and not NOT_TENSOR_SUFFIX.search(last)):
            return self.registered_buffer(expr) or isinstance(expr, ast.Name) and (
                self._holds_a_tensor(expr) or self._reduced_into_a_backward(expr)
                or self._drawn_from_tensors(expr))
        return not (isinstance(expr, ast.Name) and self._holds_a_python_number(expr))

    def registered_buffer(self, expr: ast.AST) -> bool:
        """``self.queue_ptr`` in a method of a class that registers it as a buffer
        (``self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))``, not
        ``None``): a tensor whatever its name (``int(self.queue_ptr)``, ``if self.inited:``
        read it on the host).

        Example:
            >>> from torchdoctor.lint import lint_source
            >>> src = ("import torch\\nclass Q(torch.nn.Module):\\n    def __init__(self):\\n"
            ...        "        super().__init__()\\n"
            ...        "        self.register_buffer('ptr', torch.zeros(1, dtype=torch.long))\\n"
            ...        "    def forward(self, k):\\n        i = int(self.ptr)\\n        return k[i:]\\n")
            >>> [(f.code, f.line) for f in lint_source(src)]
            [('TD205', 7)]
        """
        if not (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
                and expr.value.id == "self"):  # fmt: skip
            return False
        cls = self.parent(expr)  # type: ignore[attr-defined]
        while cls is not None and not isinstance(cls, ast.ClassDef):
            cls = self.parent(cls)  # type: ignore[attr-defined]
        if cls is None:
            return False
        key = ("registered buffers", id(cls))
        if key not in self.context.cache:
            self.context.cache[key] = {
                c.args[0].value for c in ast.walk(cls)
                if isinstance(c, ast.Call) and method_name(c) == "register_buffer"
                and dotted(c.func.value) == "self" and len(c.args) >= 2  # type: ignore[attr-defined]
                and isinstance(c.args[0], ast.Constant) and isinstance(c.args[0].value, str)
                and not (isinstance(c.args[1], ast.Constant) and c.args[1].value is None)
            }  # fmt: skip
        return expr.attr in self.context.cache[key]

    def _model_output_entry(self, expr: ast.Subscript) -> bool:
        """``out["iou_loss"]`` where the function assigns ``out`` only from a model's call
        (``out = model(imgs, labels)``): a loss or logits the model returned."""
        key = expr.slice
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)
                and TENSOR_NAME.search(key.value) and not NOT_TENSOR_SUFFIX.search(key.value)
                and isinstance(expr.value, ast.Name)):  # fmt: skip
            return False
        values = self.assigned_values(self.enclosing_scope(expr), expr.value.id)
        return bool(values) and all(
            isinstance(v, ast.Call) and MODEL_NAME.search(dotted(v.func) or "_") for v in values
        )

    def _holds_a_tensor(self, name: ast.Name) -> bool:
        """``cov = (a == b).any(1).float().mean()``: every value assigned to the name in the
        function is a chain of calls that only torch has (a ``torch.*`` function, or a method
        NumPy arrays lack: ``.float()``, ``.unsqueeze()``) ending in no host read."""
        values = [  # (`heat = heat * (heat > t)`: arithmetic on itself keeps what it was;
            # `mask = None`: optional, a tensor where used as one; the read in its own rebinding
            # is of the old value; a negation keeps the chain it negates)
            v for v in map(_unnegated, self.assigned_values(self.enclosing_scope(name), name.id))
            if not (isinstance(v, ast.BinOp) and any(  # (bs = torch.tensor(np.array(bs)))
                isinstance(side, ast.Name) and side.id == name.id for side in (v.left, v.right)))
            and not (isinstance(v, ast.Constant) and v.value is None) and name not in ast.walk(v)
        ]  # fmt: skip
        return bool(values) and all(  # (or a function of the file returning such a chain)
            isinstance(v, ast.Call) and method_name(v) not in HOST_COPY_METHODS
            and not self._python_number(v)
            and (self._torch_only_chain(v) or returns_only(v, self._torch_only_chain))
            for v in values
        )  # fmt: skip

    def _drawn_from_tensors(self, name: ast.Name) -> bool:
        """``{k: float(v) for k, v in {"disc": loss_d, "gen": loss_g}.items()}``,
        ``[float(v) for v in (loss_a, loss_b)]``: the variable of a comprehension or loop
        over a literal dict / list / tuple (or a name assigned one) whose every value looks
        like a tensor."""
        node, parent = name, self.parent(name)  # type: ignore[attr-defined]
        while parent is not None:
            gens = parent.generators if isinstance(parent, COMPREHENSIONS) else (
                [parent] if isinstance(parent, ast.For) and node is not parent.iter else [])
            for gen in gens:
                values = self._literal_values(gen.iter, gen.target, name.id)
                if values is not None:
                    return bool(values) and all(self.looks_like_tensor(v) for v in values)
            node, parent = parent, self.parent(parent)  # type: ignore[attr-defined]
        return False

    def _literal_values(self, iterable: ast.AST, target: ast.AST, name: str) -> list | None:
        """The values ``name`` takes when ``target`` is bound from ``iterable`` (a literal, a
        name assigned one, or its ``.items()`` / ``.values()``); None when ``target`` does not
        bind ``name`` or the values are not written out."""
        method = method_name(iterable) if isinstance(iterable, ast.Call) and not (
            iterable.args or iterable.keywords) else None  # fmt: skip
        if method in ("items", "values"):
            iterable = iterable.func.value  # type: ignore[attr-defined]
        if method == "items":
            if not (isinstance(target, ast.Tuple) and len(target.elts) == 2):
                return None
            target = target.elts[1]
        if not (isinstance(target, ast.Name) and target.id == name):
            return None
        if isinstance(iterable, ast.Name):
            made = self.assigned_values(self.enclosing_scope(iterable), iterable.id)  # type: ignore[attr-defined]
            iterable = made[0] if len(made) == 1 else iterable
        if isinstance(iterable, ast.Dict):
            return list(iterable.values) if method in ("items", "values") else None
        if isinstance(iterable, ast.List | ast.Tuple | ast.Set) and method is None:
            return list(iterable.elts)
        return None

    def _reduced_into_a_backward(self, name: ast.Name) -> bool:
        """``cd = chamfer(pred, gt).mean()`` then ``loss = a + w * cd; loss.backward()``: every
        value of the name in the function is a reduction (``.mean()``, ``.sum()``) of a call,
        and the name is a term of a loss the function calls ``.backward()`` on: autograd's
        input, a tensor."""
        scope = self.enclosing_scope(name)
        values = self.assigned_values(scope, name.id)
        if not values or not all(
            isinstance(v, ast.Call) and method_name(v) in REDUCTIONS
            and isinstance(v.func.value, ast.Call) and not self._python_number(v)  # type: ignore[attr-defined]
            and not self.host_data_read(v) for v in values
        ):  # fmt: skip
            return False
        for call in ast.walk(scope):
            if not (isinstance(call, ast.Call) and method_name(call) == "backward"):
                continue
            loss = call.func.value  # type: ignore[attr-defined]
            terms = [loss] + (self.assigned_values(scope, loss.id) if isinstance(loss, ast.Name) else [])
            if any(isinstance(n, ast.Name) and n.id == name.id for t in terms for n in ast.walk(t)):
                return True
        return False

    def host_data_read(self, call: ast.Call) -> bool:
        """``np.sort(idx).tolist()``: a method of a NumPy/SciPy/pandas result (or of a name
        holding only such results, :meth:`_on_host_data`): no tensor, no sync."""
        receiver = root = call.func.value if isinstance(call.func, ast.Attribute) else None
        while isinstance(root, ast.Call) and isinstance(getattr(root.func, "value", None), ast.Call) and not self.callee(root):
            root = root.func.value  # type: ignore[attr-defined]  # (Informer's np.ceil(...).astype('int').item())
        if isinstance(receiver, ast.Call) and (
            any(n.startswith(_HOST_LIBRARIES) for n in self.callee(root))  # type: ignore[arg-type]
            or self.made_on_the_host(receiver)
        ):
            return True
        if isinstance(receiver, ast.Name) and any(  # (`v = v.item()` over a loop's tensors
            isinstance(n, ast.Name) and n.id == receiver.id  # says nothing of what v was)
            for v in self.assigned_values(self.enclosing_scope(receiver), receiver.id)
            for n in ast.walk(v)
        ):
            return False
        return self._on_host_data(call)

    def _on_host_data(self, call: ast.Call) -> bool:
        """A reduction of a name that holds host data: every value assigned to it in the
        function is a NumPy/SciPy/scikit-learn result or a host copy (``d = cdist(a, b)``, then
        ``d.mean()``: NumPy's, no sync)."""
        receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
        return isinstance(receiver, ast.Name) and self._holds_host_data(receiver)

    def logs_a_tensor(self, call: ast.Call) -> bool:
        """``writer.add_scalar("loss", loss, step)``, or a dict of them to ``add_scalars``
        (``{"loss": loss, "kl": kl.mean()}``, the Attentive Neural Process's): a value read."""
        given = [*call.args[1:], *(v for d in call.args[1:2] if isinstance(d, ast.Dict) for v in d.values)]
        return any(self.looks_like_tensor(a) for a in given)

    def host_made(self, expr: ast.AST) -> bool:
        """``float(torch.rand(()))``, ``int(n)`` with ``n = torch.randint(3, k, ())``: a
        cast of a tensor made on the host (or of a name holding only host data): no sync."""
        if isinstance(expr, ast.Call):
            return self.made_on_the_host(expr)
        return isinstance(expr, ast.Name) and self._holds_host_data(expr)

    def _holds_host_data(self, receiver: ast.Name) -> bool:
        """Every value the function assigns to ``receiver`` is host data (:meth:`_on_host_data`)."""
        scope = self.enclosing_scope(receiver)
        values = self.assigned_values(scope, receiver.id) or self._returned_at(scope, receiver.id)
        return bool(values) and all(
            isinstance(v, ast.Call)
            and (method_name(v) in HOST_COPY_METHODS - {"cpu"}
                 or any(n.startswith(_HOST_LIBRARIES) for n in self.callee(v))
                 or self.made_on_the_host(v))
            for v in values
        )  # fmt: skip

    def made_on_the_host(self, call: ast.Call, depth: int = 3) -> bool:
        """``torch.randint(0, n, (1,))``: a torch factory given no device (``torch.tensor`` /
        ``as_tensor`` of a literal only: of a tensor they keep its device), in a file that sets
        no default device; or a torch function of such a tensor (SwAV's ``torch.cumsum(torch.
        unique_consecutive(torch.tensor([crop sizes]), return_counts=True)[1], 0)``)."""
        if "set_default_device" in self.context.source or any(k.arg == "device" for k in call.keywords):
            return False
        if not self.callee(call) & HOST_FACTORIES:
            operand = call.args[0] if call.args and depth > 0 and any(
                n.startswith("torch.") for n in self.callee(call)) else None  # fmt: skip
            while isinstance(operand, ast.Subscript):
                operand = operand.value
            return isinstance(operand, ast.Call) and self.made_on_the_host(operand, depth - 1)
        if self.callee(call) & {"torch.as_tensor", "torch.tensor"}:  # (a tensor keeps its device)
            return bool(call.args) and self._python_list(call.args[0], call)
        return True

    def _python_list(self, arg: ast.AST, at: ast.AST) -> bool:
        """A literal, a list comprehension, or a name its function binds only to those (``ok
        = []``, then appended to): Python data, which ``torch.tensor`` puts on the host."""
        if isinstance(arg, ast.Name):
            values = self.assigned_values(self.enclosing_scope(at), arg.id)
            return bool(values) and all(isinstance(v, ast.List | ast.ListComp) for v in values)
        return isinstance(arg, ast.List | ast.Tuple | ast.Constant | ast.ListComp)

    def _returned_at(self, scope: ast.AST, name: str) -> list[ast.expr]:
        """What a function of the file returns at the place ``name`` is unpacked from (``fp,
        ok = fingerprints(smiles)``: the second item of each ``return a, b`` of
        ``fingerprints``); [] when ``name`` is bound any other way."""
        key = ("unpacked calls", id(scope))
        table = self.context.cache.get(key)  # type: ignore[attr-defined]
        if table is None:
            table = {}
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                        node.targets[0], ast.Tuple) and isinstance(node.value, ast.Call):  # fmt: skip
                    for k, each in enumerate(node.targets[0].elts):
                        if isinstance(each, ast.Name):
                            table.setdefault(each.id, []).append((node.value, k))
            self.context.cache[key] = table  # type: ignore[attr-defined]
        found = []
        for call, k in table.get(name, []):
            helper = same_file_callee(call)
            returns = [r.value for r in ast.walk(helper) if isinstance(r, ast.Return)] if (
                helper is not None) else []  # fmt: skip
            if not returns or not all(isinstance(r, ast.Tuple) and len(r.elts) > k for r in returns):
                return []
            found += [r.elts[k] for r in returns]  # type: ignore[attr-defined]
        return found

    def _holds_a_python_number(self, name: ast.Name) -> bool:
        """``loss_value = loss.item()`` (every assignment in the function is a host read or a
        float()/int() cast): the name holds a Python number, reading it syncs nothing."""
        values = self.assigned_values(self.enclosing_scope(name), name.id)
        if not values:
            return self._unpacked_python_number(name)
        return all(self._python_number(v) for v in values)

    def _unpacked_python_number(self, name: ast.Name) -> bool:
        """``q1_loss, q2_loss, pi_loss = agent.update_parameters(memory, bs)`` (every binding
        of the name in the function unpacks such a call) where every ``def`` of that name in
        the project returns a tuple of that length with a host read at the name's place
        (pytorch-soft-actor-critic's ``return qf1_loss.item(), qf2_loss.item(), ...``)."""
        scope, found = self.enclosing_scope(name), []
        stores = [n for n in ast.walk(scope) if isinstance(n, ast.Name) and n.id == name.id
                  and not isinstance(n.ctx, ast.Load)]  # fmt: skip
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                    node.targets[0], ast.Tuple) and isinstance(node.value, ast.Call):  # fmt: skip
                elts = node.targets[0].elts
                found += [(node.value, i, len(elts)) for i, e in enumerate(elts)
                          if isinstance(e, ast.Name) and e.id == name.id]  # fmt: skip
        if not found or len(found) != len(stores):
            return False
        project, tree = self.context.project, self.context.tree
        for call, position, size in found:
            called = getattr(call.func, "attr", None) or getattr(call.func, "id", None)
            defs = project.functions_named(called) if project is not None and called else [
                f for f in ast.walk(tree) if isinstance(f, FUNCTIONS) and f.name == called]
            returns = [r.value for f in defs for r in ast.walk(f) if isinstance(r, ast.Return)]
            if not returns or not all(
                    isinstance(v, ast.Tuple) and len(v.elts) == size
                    and self._python_number(v.elts[position]) for v in returns):  # fmt: skip
                return False
        return True

    def _python_number(self, value: ast.AST) -> bool:
        """A host read, a float()/int() cast, math/numpy/builtins (``len(y)``), a number, or
        arithmetic of only those: ``acc = (pred == y).sum().item() / len(y)``."""
        if isinstance(value, ast.Constant):
            return isinstance(value.value, int | float) and not isinstance(value.value, bool)
        if isinstance(value, ast.BinOp):
            return self._python_number(value.left) and self._python_number(value.right)
        if isinstance(value, ast.UnaryOp):
            return self._python_number(value.operand)
        return isinstance(value, ast.Call) and (
            method_name(value) in HOST_COPY_METHODS
            or bool(self.callee(value) & SCALAR_CASTS.keys())
            or any(n.startswith(("math.", "numpy.")) for n in self.callee(value))
            or "builtins.len" in self.callee(value)  # (min/max/abs/round of a tensor: one)
            or self._numpy_chain(value)
        )

    def _numpy_chain(self, call: ast.Call) -> bool:
        """Methods called on a NumPy call's result (``np.array(accs).mean()``,
        ``np.array(losses).astype(np.float32).sum()``: NumPy's, on the host)."""
        expr: ast.AST = call
        while isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and not (
                self.callee(expr)):  # fmt: skip
            expr = expr.func.value
        return expr is not call and isinstance(expr, ast.Call) and any(
            n.startswith("numpy.") for n in self.callee(expr))

    def _torch_only_chain(self, call: ast.Call, nested: bool = False) -> bool:
        """The chain of calls that ends in ``call`` (``(a == b).any(1).float().mean()``, read
        from the outside in through each method's receiver and the left side of a comparison
        or arithmetic) has a ``torch.*`` function, a method only tensors have, a call of a
        model (``(model(x).argmax(-1) == y).sum()``), or a call of a function of the file
        whose every return is such a chain (``(pairwise_dist(emb) > 0).sum()``; one level)."""
        expr: ast.AST = call
        while True:
            while isinstance(expr, (ast.Subscript, ast.Compare, ast.BinOp)):
                expr = expr.left if not isinstance(expr, ast.Subscript) else expr.value
            if not isinstance(expr, ast.Call):
                return False
            if method_name(expr) in TORCH_ONLY_METHODS and not self.callee(expr) or any(
                TORCH_TENSOR_FUNCTION.match(n) for n in self.callee(expr)  # type: ignore[attr-defined]
            ):
                return True
            if isinstance(expr.func, ast.Name) and MODEL_NAME.search(expr.func.id):
                return True  # (a module's output: `(model(x).argmax(-1) == y).sum()`)
            if not isinstance(expr.func, ast.Attribute):
                return not nested and isinstance(expr.func, ast.Name) and returns_only(
                    expr, lambda r: self._torch_only_chain(r, nested=True))  # fmt: skip
            expr = expr.func.value


def _unnegated(value: ast.AST) -> ast.AST:
    """``-(p * logp).sum()`` read as the chain it negates (an entropy is a tensor too)."""
    return value.operand if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub) else value


def copied_to_host_first(receiver: ast.AST) -> bool:
    """``x.cpu()`` / ``x.to("cpu")`` / ``x.detach().cpu()`` ...: the tensor ``.numpy()``
    reads was copied to the host first (the copy is the sync); without it, a CUDA tensor's
    ``.numpy()`` raises, so the tensor was on the host already.

    Example:
        >>> [copied_to_host_first(ast.parse(c, mode="eval").body) for c in ("x.detach().cpu()", "x.detach()")]
        [True, False]
    """
    while isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute):
        if receiver.func.attr in {"cpu", "to"}:
            return True
        receiver = receiver.func.value
    return False


#: bitwise operators: their operands are integers or booleans (no gradient)
_BIT_OPS = (ast.BitXor, ast.BitAnd, ast.BitOr, ast.LShift, ast.RShift)


def in_bit_arithmetic(node: ast.AST, parent_of) -> bool:
    """``node`` is an operand (through arithmetic) of a bitwise operator in its statement:
    ``h ^= coords[..., i] * primes[i]`` (a spatial hash of integer grid coordinates), so it
    holds integers, which autograd does not track.

    Example:
        >>> from torchdoctor.lint.syntax import link_parents, parent
        >>> tree = ast.parse("h ^= c[..., i] * p[i]")
        >>> _ = link_parents(tree)
        >>> in_bit_arithmetic(tree.body[0].value.left, parent)
        True
    """
    above = parent_of(node)
    while isinstance(above, ast.BinOp | ast.UnaryOp | ast.AugAssign):
        if isinstance(getattr(above, "op", None), _BIT_OPS):
            return True
        if isinstance(above, ast.AugAssign):
            return False
        above = parent_of(above)
    return False

"""TD307: a tensor autograd tracks, sliced at the loop variable in every iteration.

``for t in range(L): h = deltaA[:, t] * h + BX[:, t]`` (a hand-written scan, an RNN run over
time steps, a loss summed per time step) records one select per iteration. The backward of
each writes a zero gradient the size of the whole tensor and copies the slice's gradient into
it, and autograd sums those full-size gradients: L passes over the tensor where one would do.
``deltaA.unbind(1)`` before the loop records one node whose backward is one stack (mamba.py's
sequential scan: 16.6 s -> 4.5 s for 40 training steps on a CPU, the same loss).

Reported for ``x[:, t]`` / ``x[..., t, :]`` (the loop variable, or ``t - 1``, at one position,
full slices elsewhere) and ``x.select(d, t)`` inside ``for t in range(...)``, when ``x`` is
computed with autograd on: made in the function by arithmetic or calls (a model's output, an
op of a ``forward``'s argument), or an argument of a ``forward``. Left alone: data (a loader's
batch, a tensor moved or cast only), NumPy arrays, tensors the loop itself writes
(``out[:, t] = ...``), code under ``torch.no_grad()`` (or whose every caller is), ``x[t]`` of
anything not made by torch calls (a list of feature maps), and short literal ranges.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.denoising_loops import range_call
from torchdoctor.lint.loop_shapes import made_by_numpy
from torchdoctor.lint.project_scan import _under_no_grad
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.slice_sources import (
    calls_a_module,
    grad_outputs,
    numpy_attribute,
    reads_len,
    stacked_parameter,
    unpacked_from_a_module,
    written_in,
)
from torchdoctor.lint.syntax import MODEL_NAME
from torchdoctor.lint.tensor_values import TensorValues, in_bit_arithmetic
from torchdoctor.lint.visitor import FOR, FUNCTIONS, RuleVisitor, dotted, method_name

RULES = (
    Rule(
        "TD307",
        "slice-per-iteration",
        "warning",
        "a tensor autograd tracks sliced at the loop variable in every iteration (x[:, t] for "
        "t in range(L)): each slice's backward writes a zero gradient the size of all of x, "
        "and autograd sums L of them",
        "take the slices once before the loop: for x_t in x.unbind(1) (one stack in backward)",
        "import torch.nn as nn\nclass Scan(nn.Module):\n    def forward(self, a, b):\n"
        "        h, hs = 0, []\n        for t in range(a.shape[1]):\n"
        "            h = a[:, t] * h + b[:, t]\n            hs.append(h)\n"
        "        return torch.stack(hs, 1)",
        "import torch.nn as nn\nclass Scan(nn.Module):\n    def forward(self, a, b):\n"
        "        h, hs = 0, []\n        for a_t, b_t in zip(a.unbind(1), b.unbind(1)):\n"
        "            h = a_t * h + b_t\n            hs.append(h)\n"
        "        return torch.stack(hs, 1)",
        backward_only=True,
    ),
)

#: calls that return a tuple of tensors: indexing it selects nothing (no backward of a slice)
_SEQUENCES = frozenset({"split", "chunk", "unbind", "tensor_split", "hsplit", "vsplit"})
#: literal ranges up to this many iterations are left alone (a few slices cost little)
_FEW = 8
#: calls that make a tensor without a graph (constants, buffers, data)
_CONSTRUCTORS = frozenset(
    {"zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "full_like",
     "arange", "linspace", "tensor", "as_tensor", "from_numpy", "randn", "rand", "randint",
     "randn_like", "rand_like", "load", "eye", "next", "iter", "enumerate", "zip", "list",
     "tuple", "dict", "range", "len", "open", "read_image", "detach", "numpy", "tolist",
     "item", "cpu", "any", "all", "isnan", "isinf", "isfinite",
     # integer results: indices and masks carry no gradient
     "one_hot", "argmax", "argmin", "argsort", "nonzero", "bincount", "randperm", "multinomial",
     "searchsorted", "bucketize", "eq", "ne", "gt", "lt", "ge", "le", "isin"}
)  # fmt: skip
#: methods whose arguments are shapes, dims or dtypes: as tracked as their receiver alone
_SHAPING = frozenset(
    {"view", "reshape", "expand", "repeat", "permute", "transpose", "to", "type", "flatten",
     "unflatten", "squeeze", "unsqueeze", "narrow", "split", "chunk", "unfold", "contiguous",
     "float", "half", "double", "bfloat16", "long", "int", "cuda", "movedim", "flip", "roll"}
)  # fmt: skip
#: argument names of indices, masks, labels and raw inputs (data, not activations)
_DATA_ARGUMENT = re.compile(
    r"(^|_)(ids?|idx|indices|index|mask|masks|labels?|targets?|positions?|pos|timesteps?|"
    r"lengths?|lens|tokens?|bbox|boxes|codes|pixels|audio|waveforms?|input_features|"
    r"trg|tgt|src|text|captions?|sentences?|annot(ation)?s?|"  # (token ids; a detector's boxes)
    r"y|gt|obs|observations?|actions?|rewards?|images?|imgs?|frames|traj|trajector(y|ies)|"
    r"(past|pixel|input|future)_values|"
    r"first|dones?|terminals?|terminated|truncated|resets?|flags?|valid|clips?|videos?)(_|$)"
)
_ACTIVATION = re.compile(  # argument names of a model's outputs (a loss's logits: autograd tracks)
    r"(^|_)(logits|scores|preds?|predictions?|outputs?|hidden|feats|features|embeddings?|h|"
    r"hidden_states)$")  # (THP's log-likelihood of the encoder's states, `h`)
#: a loop over a handful of things (axes, images, heads, levels ...): few slices, little cost
_FEW_THINGS = re.compile(
    r"(?i)(?<![a-z])(axes|axis|heads?|images?|layers?|levels?|scales?|experts?|groups?|dims?|"
    r"views?|cameras?|crops?|stages?|blocks?|branch(es)?|class(es)?|tasks?|modalit(y|ies)|"
    r"objectives?|codebooks?|mask_tokens?|quantizers?)(?![a-z])"
)


class SliceLoopRules(TensorValues, RuleVisitor):
    """TD307 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\nclass RNN(torch.nn.Module):\\n    def forward(self, x):\\n"
        ...        "        h = self.h0\\n        for t in range(x.size(1)):\\n"
        ...        "            h = self.cell(x[:, t], h)\\n        return h\\n")
        >>> [f.code for f in lint_source(src)]
        ['TD307']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"\bfor\b", r"\brange\("),)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if not isinstance(node.ctx, ast.Load) or (found := self._sliced_at(node.slice)) is None:
            return
        index, tuple_form = found
        if isinstance(node.value, ast.Name):
            self._check(node, node.value, index, tuple_form)
        elif stacked_parameter(node.value, self.parent):
            self._check_parameter(node, index)

    def _check_parameter(self, node: ast.Subscript, index: ast.AST) -> None:
        """``self.kernels[i]`` in ``for i in range(self.num_layers)``: a parameter holding
        every layer's weights (DCN-v2's cross network), sliced per layer in the forward."""
        loop = self._range_loop(node, index, layers=True)  # (a loop over the layers it holds)
        scope = self.enclosing_scope(node)
        if loop is None or _under_no_grad(node) is True or self._callers_without_grad(scope):
            return
        name = self.code_of(node.value)
        self.report(
            node,
            "TD307",
            f"`{self.code_of(node)}` slices the parameter `{name}` at the loop variable in "
            f"every iteration: each slice's backward writes a zero gradient the size of all of "
            f"`{name}` and autograd sums one per iteration; take the slices once before the "
            f"loop, `for w in {name}.unbind({_dim_text(node)})` (its backward is one stack)",
        )

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            method_name(node) == "select"
            and isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and len(node.args) == 2
        ):
            self._check(node, func.value, node.args[1], True)

    # -- the pattern -----------------------------------------------------------------------
    @staticmethod
    def _sliced_at(index: ast.AST) -> tuple[ast.AST, bool] | None:
        """``(the varying index, tuple form)`` of ``x[:, t]`` / ``x[..., t]`` / ``x[t]``."""
        if not isinstance(index, ast.Tuple):
            return (index, False) if _loop_index(index) else None
        sliced = any(isinstance(e, ast.Slice) for e in index.elts)  # (torch's x[:, t, None]:
        varying = [e for e in index.elts  # a new axis; CuTe's t[None, m], None for a whole mode)
                   if not _full(e) and not isinstance(e, ast.Slice)  # (x[:b, t, :]: the rows
                   and not (sliced and isinstance(e, ast.Constant) and e.value is None)]  # left)
        if len(varying) == 1 and _loop_index(varying[0]):
            return varying[0], True
        return None

    def _check(self, node: ast.AST, tensor: ast.Name, index: ast.AST, tuple_form: bool) -> None:
        parent = self.parent(node)  # (int(ln[i]): a number read, DLRM's layer sizes; a hash's
        if isinstance(parent, ast.Call) and dotted(parent.func) in ("int", "float", "bool") or (
                in_bit_arithmetic(node, self.parent)):  # `h ^= coords[..., i]`: integers)
            return
        loop = self._range_loop(node, index)
        if loop is None or tensor.id in self.assigned_in(loop) or written_in(loop, tensor.id):
            return
        scope = self.enclosing_scope(node)
        if getattr(scope, "name", None) == "__init__" or _under_no_grad(node) is True or (
                self._callers_without_grad(scope)):  # (a constructor runs once: dlrm's ln[i])
            return
        if _in_autograd_function(scope) or self._looked_up(node) or grad_outputs(node, self):
            return  # (autograd is off in a Function's forward; an embedding takes indices)
        if not tuple_form and tensor.id not in self._counted_names(loop, scope) and not (
            self._holds_a_tensor(tensor) or self._reshaped(tensor.id, scope)
        ):
            return  # x[t] over another count (or len(x)): a list's items as likely
        if made_by_numpy(tensor, self, scope) or self._only_detached(node, loop):
            return
        if not self._tracked(tensor.id, scope, depth=3):
            return
        if not tuple_form and not (_in_module(scope) or self._holds_a_tensor(tensor)):
            return  # x[t] outside a module: a batch's items (post-processing), most likely
        dim = _dim_text(node)
        self.report(
            node,
            "TD307",
            f"`{self.code_of(node)}` slices `{tensor.id}` at the loop variable in every "
            f"iteration: each slice's backward writes a zero gradient the size of all of "
            f"`{tensor.id}` and autograd sums one per iteration (a pass over the whole tensor "
            f"each); take the slices once before the loop, `for {tensor.id}_t in "
            f"{tensor.id}.unbind({dim})` (its backward is one stack)",
        )

    def _reshaped(self, name: str, scope: ast.AST) -> bool:
        """Every value ``scope`` assigns ``name`` ends in a reshaping method (``cur =
        self.conv(x).view(T, B, -1)``): an array, not a list of feature maps."""
        values = self.assigned_values(scope, name)
        return bool(values) and all(
            isinstance(v, ast.Call) and method_name(v) in _SHAPING for v in values
        )

    def _only_detached(self, node: ast.AST, loop: ast.AST) -> bool:
        """What the slice makes is only used detached: ``(x[b] @ y[b].T).detach()``, or
        ``sim = x[b] @ y[b].T`` with every later read of ``sim`` in the loop a ``sim.detach()``
        (a matching cost handed to scipy): no backward runs through the slice."""
        child, parent = node, self.parent(node)
        while parent is not None and not isinstance(parent, ast.stmt):
            if isinstance(parent, ast.Attribute) and parent.attr == "detach":
                return True
            child, parent = parent, self.parent(parent)
        if not (isinstance(parent, ast.Assign) and len(parent.targets) == 1
                and isinstance(parent.targets[0], ast.Name) and child is parent.value):
            return False  # fmt: skip
        name = parent.targets[0].id
        reads = [n for n in ast.walk(loop) if isinstance(n, ast.Name) and n.id == name
                 and isinstance(n.ctx, ast.Load)]  # fmt: skip
        return bool(reads) and all(
            isinstance(self.parent(n), ast.Attribute) and self.parent(n).attr == "detach"
            for n in reads
        )

    def _range_loop(self, node: ast.AST, index: ast.AST, layers: bool = False) -> ast.AST | None:
        """The ``for t in range(...)`` loop whose variable ``index`` reads, unless its range is
        a short literal (or, unless ``layers``, a count of a few things); None otherwise."""
        names = {n.id for n in ast.walk(index) if isinstance(n, ast.Name)}
        for loop in self.enclosing_loops(node):
            if not isinstance(loop, FOR) or not isinstance(loop.target, ast.Name):
                continue
            if loop.target.id not in names:
                continue
            counted = range_call(loop.iter)
            if counted is None:
                return None
            bounds = [a.value for a in counted.args if isinstance(a, ast.Constant)]
            if len(bounds) == len(counted.args) and all(isinstance(b, int) for b in bounds):
                if len(range(*bounds)) <= _FEW:
                    return None
            if any(reads_len(a) for a in counted.args):
                return None  # range(len(x)): a Python sequence's items, most likely
            if not layers and self._few_things(counted, self.enclosing_scope(node)):
                return None
            return loop
        return None

    def _counted_names(self, loop: ast.For, scope: ast.AST) -> set[str]:
        """The tensors whose size the loop's range counts: ``range(x.size(0))``, or ``range(T)``
        with ``T = x.size(0)`` / ``T, B, _ = x.shape`` (a list has no shape)."""
        counted = range_call(loop.iter)
        names = {n.id for a in counted.args for n in ast.walk(a) if isinstance(n, ast.Name)}  # type: ignore[union-attr]
        sized = _sized_names(counted)
        for statement in ast.walk(scope):
            if isinstance(statement, ast.Assign) and any(
                isinstance(n, ast.Name) and n.id in names
                for t in statement.targets for n in ast.walk(t)
            ):  # fmt: skip
                sized |= _sized_names(statement.value)
        return sized

    def _looked_up(self, node: ast.AST, depth: int = 2) -> bool:
        """The slice goes into an embedding (``self.x_pos_emb(bbox[..., i])``; or ``seq =
        hist[u]`` then ``self.item_emb(seq[seq > 0])``, a user's history of item ids): the
        tensor holds indices, which carry no gradient."""
        call = self.parent(node)
        if isinstance(call, ast.Subscript) and call.value is node:  # (ids[mask]: indices too)
            return self._looked_up(call, depth)
        if depth and isinstance(call, ast.Assign) and call.value is node and isinstance(
                name := call.targets[0], ast.Name):  # fmt: skip
            return any(self._looked_up(n, depth - 1) for n in ast.walk(self.enclosing_scope(
                node)) if isinstance(n, ast.Name) and n.id == name.id and n is not name)
        return (
            isinstance(call, ast.Call)
            and node in call.args
            and "emb" in (dotted(call.func) or ast.unparse(call.func)).lower()
        )

    def _few_things(self, counted: ast.Call, scope: ast.AST) -> bool:
        """``range(n_axes)``, ``range(num_images)`` (or a name assigned from such words): a
        loop over a handful of axes, images or heads, not over time steps."""
        texts = [ast.unparse(a) for a in counted.args]
        for arg in counted.args:
            if isinstance(arg, ast.Name):
                texts += [ast.unparse(v) for v in self.assigned_values(scope, arg.id)]
        return any(_FEW_THINGS.search(t) for t in texts)

    def _callers_without_grad(self, scope: ast.AST) -> bool:
        project = getattr(self.context, "project", None)
        if project is None or not isinstance(scope, FUNCTIONS) or scope.name == "forward":
            return False
        return project.callers_run_without_grad(scope.name) is True

    def _tracked(self, name: str, scope: ast.AST, depth: int) -> bool:
        """``name`` holds a tensor autograd likely tracks: an argument of a method of a class
        (a layer's activations; not one named like indices or a mask), or made in ``scope``
        from such a value, a module's call or a parameter (not by constructors, index-valued
        ops, NumPy, or only moving and casting data)."""
        if depth <= 0:
            return False
        if isinstance(scope, FUNCTIONS) and isinstance(self.parent(scope), ast.ClassDef):
            if name in {a.arg for a in scope.args.args[1:]} and not _DATA_ARGUMENT.search(
                    name) and (_in_module(scope) or _imports_torch(self.names)):  # (NumPy: no)
                return True
        elif isinstance(scope, FUNCTIONS) and name in {a.arg for a in scope.args.args} and (
                project := self.context.project) is not None:  # fmt: skip
            if _ACTIVATION.search(name) and project.called_in_loop(  # (a loss function a
                    scope.name, True, self.context.path) is not None:  # training loop calls on logits)
                return True
            if not _DATA_ARGUMENT.search(name) and project.called_in_forward(  # (Mamba's scan
                    scope.name, self.context.path):  # a forward runs on its activations)
                return True
        values = self.assigned_values(scope, name)
        if not _DATA_ARGUMENT.search(name):  # (an RNN's output: `h, _ = self.dec(x)`)
            values = values + [n.value for n in ast.walk(scope) if isinstance(n, ast.Assign)
                               and isinstance(n.value, ast.Call) and len(n.targets) == 1
                               and isinstance(n.targets[0], ast.Tuple) and n.targets[0].elts
                               and isinstance(n.targets[0].elts[0], ast.Name)
                               and n.targets[0].elts[0].id == name]  # fmt: skip
        values = values + unpacked_from_a_module(scope, name)  # (recon, masks = model(x))
        values = values + [  # (a list the function grows: vels.append(vel); torch.stack(vels, 1))
            c.args[0] for c in ast.walk(scope) if isinstance(c, ast.Call) and len(c.args) == 1
            and method_name(c) == "append" and isinstance(c.func.value, ast.Name)  # type: ignore[attr-defined]
            and c.func.value.id == name]  # type: ignore[attr-defined]  # fmt: skip
        fresh = [v for v in values if name not in {n.id for n in ast.walk(v)
                                                   if isinstance(n, ast.Name)}]  # fmt: skip
        if any(self._computed(v, scope, depth - 1) for v in fresh or values):
            return True
        # (a state a rollout feeds back through a model: vel = vel + model(g, vel))
        return any(v not in fresh and calls_a_module(v) for v in values)

    def _computed(self, value: ast.AST, scope: ast.AST, depth: int) -> bool:
        """``value`` carries autograd history (see :meth:`_tracked`)."""
        again = lambda e: self._computed(e, scope, depth)  # noqa: E731
        if isinstance(value, ast.Name):
            return self._tracked(value.id, scope, depth)
        if isinstance(value, ast.Attribute):  # a parameter (self.weight), not a setting
            return (dotted(value) or "").count(".") == 1 and dotted(value).startswith(  # type: ignore[union-attr]
                "self.") and not numpy_attribute(value, self)  # (nor a board's np.zeros)
        if isinstance(value, ast.BinOp):
            return again(value.left) or again(value.right)
        if isinstance(value, ast.UnaryOp):
            return again(value.operand)
        if isinstance(value, ast.Subscript):
            return again(value.value)
        if not isinstance(value, ast.Call):
            return False
        called = dotted(value.func) or ""
        last = called.rsplit(".", 1)[-1]
        if last in _CONSTRUCTORS or any(n.startswith("numpy.") for n in self.callee(value)):
            return False
        if last in _SEQUENCES:  # (spx = torch.split(out, w, 1): spx[i] picks from a tuple)
            return False
        arguments = [*value.args, *(k.value for k in value.keywords)]
        if called.startswith("self.") or MODEL_NAME.search(called.split(".", 1)[0]):
            return True  # a module's call (self.cell(x), model(x)) or one of its methods
        functions = any(n.startswith("torch.") for n in self.callee(value))
        if isinstance(value.func, ast.Attribute) and not functions:
            receiver = value.func.value  # a method: as tracked as its receiver (or arguments)
            if method_name(value) in _SHAPING:
                return again(receiver)
            return again(receiver) or any(again(a) for a in arguments)
        return any(again(a) for a in arguments)


def _sized_names(expr: ast.AST) -> set[str]:
    """Names whose ``.shape`` / ``.size(...)`` ``expr`` reads."""
    out: set[str] = set()
    for node in ast.walk(expr):
        if isinstance(node, ast.Attribute) and node.attr in ("shape", "size"):
            if isinstance(node.value, ast.Name):
                out.add(node.value.id)
    return out


def _in_module(scope: ast.AST) -> bool:
    """A ``forward``, or a method of a class deriving from ``...Module``."""
    if isinstance(scope, FUNCTIONS) and scope.name == "forward":
        return True
    owner = getattr(scope, "td_parent", None)
    return isinstance(owner, ast.ClassDef) and any(
        (dotted(base) or "").endswith("Module") for base in owner.bases
    )


def _in_autograd_function(scope: ast.AST) -> bool:
    """A method of a ``torch.autograd.Function`` subclass (its forward runs without autograd;
    its backward's slices are of gradients)."""
    owner = getattr(scope, "td_parent", None)
    return isinstance(owner, ast.ClassDef) and any(
        (dotted(base) or "").endswith("Function") for base in owner.bases
    )


def _full(expr: ast.AST) -> bool:
    """``:`` or ``...`` in a subscript."""
    if isinstance(expr, ast.Slice):
        return expr.lower is None and expr.upper is None and expr.step is None
    return isinstance(expr, ast.Constant) and expr.value is Ellipsis


def _loop_index(expr: ast.AST) -> bool:
    """A name, or a name plus or minus a constant (``t``, ``t - 1``)."""
    if isinstance(expr, ast.Name):
        return True
    return (
        isinstance(expr, ast.BinOp)
        and isinstance(expr.op, (ast.Add, ast.Sub))
        and isinstance(expr.left, ast.Name)
        and isinstance(expr.right, ast.Constant)
    )


def _dim_text(node: ast.AST) -> str:
    """The dimension the slice takes (for the unbind in the message)."""
    if isinstance(node, ast.Call):
        return ast.unparse(node.args[0])
    index = node.slice  # type: ignore[attr-defined]
    if not isinstance(index, ast.Tuple):
        return "0"
    for position, element in enumerate(index.elts):
        if not _full(element):
            if any(_full(e) and isinstance(e, ast.Constant) for e in index.elts[:position]):
                return str(position - len(index.elts))  # (after an Ellipsis: from the end)
            return str(position)
    return "0"


def _imports_torch(names) -> bool:
    """The file imports torch or one of its modules (a file of NumPy code slices arrays)."""
    return any(q.split(".", 1)[0] == "torch" for qs in names.imports.values() for q in qs)

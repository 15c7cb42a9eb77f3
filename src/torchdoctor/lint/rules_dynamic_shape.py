"""TD207: an operation whose output size depends on tensor values, run every step.

Boolean-mask indexing ``x[mask]``, ``torch.nonzero`` / ``argwhere`` / one-argument
``torch.where(cond)``, ``masked_select``, ``torch.unique`` and ``repeat_interleave`` by a tensor
of counts return as many elements as the data says. On CUDA the host must read that count
before it can allocate the result: the CPU waits for the GPU (a host-device sync), and
torch.compile breaks the graph (or recompiles) there. Reported where it runs every step: in the
body of a training loop or step (as TD201 decides), in a module-level function a training
loop of the project calls, or in a module's ``forward`` (as TD205 decides: not an
inference-only, post-processing or metric forward, nor a logged branch), and only when the
file or project moves data to CUDA.

A mask must be known to be one: a comparison (``y[y != -100]``), ``~`` / ``&`` / ``|`` of
masks, a call that returns booleans (``torch.isfinite``, ``.bool()``, ``.eq(...)``), or a
name the same function assigns only such values, or a parameter named as a mask (``mask``,
``valid``, ``keep``, ``fg_mask``; ``lint/masks.py``). ``x[idx]`` with an unknown ``idx`` is not
reported. ``x[mask] = <Python number>`` is left alone: PyTorch runs it as ``masked_fill_``,
with no sync. NumPy / pandas values (a ``.cpu()`` / ``.numpy()`` copy, ``np.*`` results),
branches that run only in evaluation (``if not self.training``) and ``no_grad`` blocks in
``forward`` are skipped (``x["key"]`` too, unless ``x`` is a batch of tensors: ``batch``,
``inputs``...). One finding per statement.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.masks import MaskValues
from torchdoctor.lint.project_scan import _under_no_grad
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.rules_loops import LoopRules
from torchdoctor.lint.rules_sync import SyncRules
from torchdoctor.lint.rules_sync_forward import ForwardAndCallSyncs
from torchdoctor.lint.syntax import evaluation_branch, every_step_of
from torchdoctor.lint.tensors import (
    NOT_TENSORS,
    TENSOR_DICTS,
    TENSOR_FACTORIES,
    TORCH_TENSOR_FUNCTION,
)
from torchdoctor.lint.visitor import (
    RuleVisitor,
    calls_in,
    constant,
    dotted,
    has_host_copy,
    keyword,
    method_name,
)

RULES = (
    Rule(
        "TD207",
        "data-dependent-shape-in-step",
        "warning",
        "an operation whose output size depends on tensor values (x[mask], nonzero, "
        "masked_select, unique, torch.where(cond), repeat_interleave by a tensor) every step of "
        "code that runs on CUDA (the file or project moves data there: .cuda(), 'cuda', "
        "Trainer(accelerator='gpu')): the host waits for the GPU to count the elements, and "
        "torch.compile breaks the graph",
        "keep shapes fixed: weight by the mask ((loss * mask).sum() / mask.sum().clamp(min=1)), "
        "torch.where(mask, v, x) / masked_fill for x[mask] = v, output_size= for "
        "repeat_interleave; compute unique outside the step",
        "for x, y in loader:\n    x, y = x.cuda(), y.cuda()\n    err = (model(x) - y) ** 2\n"
        "    loss = err[y != -100].mean()\n    loss.backward()\n    opt.step()",
        "for x, y in loader:\n    x, y = x.cuda(), y.cuda()\n    err = (model(x) - y) ** 2\n"
        "    mask = y != -100\n    loss = (err * mask).sum() / mask.sum().clamp(min=1)\n"
        "    loss.backward()\n    opt.step()",
    ),
)

_HOST_MODULES = ("numpy.", "pandas.", "scipy.", "sklearn.")
_PANDAS = re.compile(r"^\s*(?:import|from)\s+pandas\b", re.MULTILINE)
#: name -> form, for torch.<name>(...) and x.<name>(...)
_INDEX_CALLS = {
    "nonzero": "nonzero",
    "argwhere": "nonzero",
    "masked_select": "masked_select",
    "unique": "unique",
    "unique_consecutive": "unique",
    "repeat_interleave": "repeat_interleave",
    "where": "nonzero",
}
#: tensor methods that take no positional argument (``x.unique()``, ``x.nonzero()``)
_NO_POSITIONAL = frozenset({"nonzero", "argwhere", "unique", "unique_consecutive"})
#: torch functions that create a tensor on the CPU unless given ``device=``
_CPU_FACTORIES = TENSOR_FACTORIES | {
    f"torch.{n}"
    for n in ("arange", "ones", "zeros", "full", "empty", "eye", "linspace", "rand", "randn",
              "randint", "randperm", "BoolTensor")
}  # fmt: skip
#: methods whose result is a tensor of counts (repeat_interleave's ``repeats``)
_COUNT_METHODS = frozenset({"sum", "long", "int", "bincount", "diff", "count_nonzero", "cuda"})


class DynamicShapeRules(MaskValues, ForwardAndCallSyncs, RuleVisitor):
    """TD207 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\ndef train(model, loader, opt):\\n    for x, y in loader:\\n"
        ...        "        x, y = x.cuda(), y.cuda()\\n        err = (model(x) - y) ** 2\\n"
        ...        "        loss = err[y != -100].mean()\\n        loss.backward()\\n"
        ...        "        opt.step()\\n")
        >>> [(f.code, f.line) for f in lint_source(src)]
        [('TD207', 6)]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = (
        (r"torch", r"def forward\(|\.backward\(|training_step|def compute_loss\("),
        (r"torch", r"nonzero\(|masked_select\(|unique\(|argwhere\(|repeat_interleave\(|"
         r"\[(?:[^\[\]\n]|\[[^\]\n]*\])*(mask|valid|keep|filter|==|!=|>=|<=)"),  # (a helper of another file's loop)
        (r"torch", r"\.(?:any|all)\((?:dim=)?-?\d|\.bool\(\)|isfinite\(|isnan\("),  # (... a mask)
    )

    # where a statement runs every step: TD201's and TD205's decisions
    _training_context = SyncRules._training_context
    _trainer_loss = SyncRules._trainer_loss
    skip_sync = SyncRules.skip_sync
    # a mask per value in a loop over values (``x[labels == c]`` for each c) is TD301's
    _mask_loop = LoopRules._mask_loop
    skip_mask = staticmethod(LoopRules.skip_mask)

    # -- the forms ---------------------------------------------------------------------------
    def _form(self, node: ast.AST) -> str | None:
        """Which data-dependent form ``node`` is: ``read``, ``assign``, ``update``,
        ``nonzero``, ``masked_select``, ``unique``, ``repeat_interleave``; None for none."""
        if isinstance(node, ast.Subscript):
            return self._subscript_form(node)
        return self._call_form(node) if isinstance(node, ast.Call) else None

    def _subscript_form(self, node: ast.Subscript) -> str | None:
        if isinstance(node.value, (ast.List, ast.Tuple, ast.Dict, ast.Constant, ast.JoinedStr)):
            return None
        index = node.slice
        parts = index.elts if isinstance(index, ast.Tuple) else [index]
        scope = self.enclosing_scope(node)
        masks = [p for p in parts if self._is_mask(p, scope)]
        if not masks or any(self._on_host(e, scope) for e in [node.value, *masks]):
            return None
        if any(self._mask_loop(node, m) is not None for m in masks):
            return None  # TD301
        if isinstance(node.ctx, ast.Load):
            return "read"
        if not isinstance(node.ctx, ast.Store):
            return None
        parent = self.parent(node)
        if isinstance(parent, ast.AugAssign):
            return "update"
        if isinstance(parent, ast.Assign) and node in parent.targets:
            # x[mask] = 0: a Python number goes to masked_fill_ (no sync, fixed shape)
            return "assign" if self._tensor_value(parent.value, scope) else None
        return None

    def _call_form(self, node: ast.Call) -> str | None:
        names = self.callee(node)
        name = method_name(node) if not names else None
        if names:
            torch_names = {n[len("torch.") :] for n in names if n.startswith("torch.")}
            name = next((n for n in torch_names if n in _INDEX_CALLS), None)
            if name is None:
                return None
            receiver = node.args[0] if node.args else None
        else:
            receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
            if name in _NO_POSITIONAL and node.args:
                return None  # nx.unique(a), backend.nonzero(x): not the tensor method
        if name not in _INDEX_CALLS or receiver is None:
            return None
        keyed = isinstance(receiver, ast.Subscript) and isinstance(constant(receiver.slice), str)
        if isinstance(receiver, (ast.Constant, ast.List, ast.Tuple)) or keyed and (
            _PANDAS.search(self.context.source) or dotted(receiver.value) not in TENSOR_DICTS  # type: ignore[attr-defined]
        ):  # a literal; df["label"].unique(): a table column (pandas); batch["labels"]: a tensor
            return None
        if self._on_host(receiver, self.enclosing_scope(node)):
            return None
        mask = node.args[-1] if name == "masked_select" and node.args else receiver
        if _INDEX_CALLS[name] != "unique" and self._mask_loop(node, mask) is not None:
            return None  # TD301
        if name == "where":
            return "nonzero" if names and len(node.args) == 1 and not node.keywords else None
        if name == "repeat_interleave" and not self._dynamic_repeats(node, bool(names)):
            return None
        return _INDEX_CALLS[name]

    def _dynamic_repeats(self, node: ast.Call, function: bool) -> bool:
        """``repeat_interleave`` by a tensor of counts and without ``output_size=``."""
        if keyword(node, "output_size") is not None:
            return False
        if function and len(node.args) == 1 and not node.keywords:
            return True  # torch.repeat_interleave(counts)
        repeats = keyword(node, "repeats")
        position = 1 if function else 0
        if repeats is None and len(node.args) > position:
            repeats = node.args[position]
        return repeats is not None and self._counts_tensor(repeats, self.enclosing_scope(node))

    def _counts_tensor(self, expr: ast.AST, scope: ast.AST, depth: int = 0) -> bool:
        if isinstance(expr, ast.Call):
            if any(TORCH_TENSOR_FUNCTION.match(n) and n not in NOT_TENSORS
                   for n in self.callee(expr)):  # fmt: skip
                return True
            return not self.callee(expr) and method_name(expr) in _COUNT_METHODS
        if isinstance(expr, ast.Name) and depth < 3:
            values = self.assigned_values(scope, expr.id)
            return bool(values) and all(self._counts_tensor(v, scope, depth + 1) for v in values)
        return False

    # -- what is known to be a boolean mask --------------------------------------------------
    # -- NumPy, pandas and Python numbers ------------------------------------------------------
    def _on_host(self, expr: ast.AST, scope: ast.AST, depth: int = 0) -> bool:
        """``expr`` is (or is built from) a host copy, NumPy or pandas data."""
        if self._host_expression(expr):
            return True
        if depth >= 2:
            return False
        for name in {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}:
            for value in _reaching(self.assigned_values(scope, name), expr):
                if self._on_host(value, scope, depth + 1):
                    return True
        return False

    def _host_expression(self, expr: ast.AST) -> bool:
        """A ``.cpu()`` / ``.numpy()`` copy, a NumPy / pandas call, or a tensor created on the
        CPU (``torch.arange(n) != k``: no ``device=``, no ``.cuda()`` / ``.to(...)``)."""
        if isinstance(expr, ast.Call) and (keyword(expr, "device") or method_name(expr) == "cuda"):
            return False  # (made with device= or moved: on the device, whatever it came from)
        if has_host_copy(expr):
            return True
        for call in calls_in(expr):
            names = self.callee(call)
            if any(n.startswith(_HOST_MODULES) or n == "torch.from_numpy" for n in names):
                return True
            if names & _CPU_FACTORIES and keyword(call, "device") is None:
                if self._indexes_another(call, expr):
                    continue  # (x[torch.arange(B)[:, None], perm]: an index, x's device)
                node, up = call, self.parent(call)
                while isinstance(up, ast.Attribute) and isinstance(self.parent(up), ast.Call):
                    if up.attr in {"to", "cuda"}:
                        break
                    node = self.parent(up)
                    up = self.parent(node)
                else:
                    return True
        return False

    def _indexes_another(self, call: ast.Call, top: ast.AST) -> bool:
        """``call`` sits in the index of a subscript within ``top``: a tensor indexed by a CPU
        tensor (``bonds[torch.arange(B)[:, None], perm]``) stays where the indexed one is."""
        child, up = call, self.parent(call)
        while up is not None and child is not top:
            if isinstance(up, ast.Subscript) and child is up.slice:
                return True
            child, up = up, self.parent(up)
        return False

    def _tensor_value(self, value: ast.AST, scope: ast.AST, depth: int = 0) -> bool:
        """The assigned value is surely a tensor: a torch function's result, a masked read,
        arithmetic on one, or a name the function assigns only those (a Python number or an
        unknown value is not: ``x[mask] = 0`` runs as ``masked_fill_``)."""
        if isinstance(value, ast.UnaryOp):
            return self._tensor_value(value.operand, scope, depth)
        if isinstance(value, ast.BinOp):
            return self._tensor_value(value.left, scope, depth) or self._tensor_value(
                value.right, scope, depth
            )
        if isinstance(value, ast.Subscript):
            return self._subscript_form(value) == "read"
        if isinstance(value, ast.Call):
            return any(
                TORCH_TENSOR_FUNCTION.match(n) and n not in NOT_TENSORS | TENSOR_FACTORIES
                for n in self.callee(value)
            )  # torch.tensor(0.5): a one-element CPU value also runs as masked_fill_
        if isinstance(value, ast.Name) and depth < 3:
            values = self.assigned_values(scope, value.id)
            return bool(values) and all(self._tensor_value(v, scope, depth + 1) for v in values)
        return False

    # -- where it runs -------------------------------------------------------------------------
    def _where(self, node: ast.AST) -> str | None:
        """``every step of this training loop`` / ``in `Model.forward` (every call)``; None
        when ``node`` does not run every step."""
        context = self._training_context(node)
        if context is not None:
            if self.under_log_gate(node, context) or self.skip_sync(node, context):
                return None
            return every_step_of(context)
        owner = self.forward_owner(node)
        if owner is None:
            helper = self._helper_of_a_forward(node)  # (a method its forward runs, even under
            if _under_no_grad(node) is True and not (helper or "").endswith(".forward`)"):
                helper = None  # no_grad: PartialFC's sample(labels) runs every training step)
            return f"in {helper} (every call)" if helper else self._helper_of_a_step(node)
        if _under_no_grad(node) is True or evaluation_branch(node):
            return None
        project = self.context.project
        if project is not None and project.module_runs_without_grad(owner):
            return None  # an inference-only module (a mesh decoder run by a no_grad sampler)
        return f"in `{owner}.forward` (every call)"

    # -- reporting ------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call | ast.Subscript) -> None:
        form = self._form(node)
        if form is None or self._first_in_statement(node) is not node:
            return
        project = self.context.project
        if not (self.context.uses_cuda or (project is not None and project.uses_cuda)):
            return
        where = self._where(node)
        if where is not None:
            self.report(node, "TD207", self._message(node, form, where))

    visit_Subscript = visit_Call

    def _first_in_statement(self, node: ast.AST) -> ast.AST:
        """The first data-dependent form of ``node``'s statement (one finding a statement:
        ``F.cross_entropy(out[keep], y[keep])`` is one)."""
        stmt = node
        while stmt is not None and not isinstance(stmt, ast.stmt):
            stmt = self.parent(stmt)
        if stmt is None:
            return node
        key = ("TD207 first", id(stmt))
        cache = self.context.cache
        if key not in cache:
            stack = [c for c in ast.iter_child_nodes(stmt)
                     if not isinstance(c, (ast.stmt, ast.excepthandler))]  # fmt: skip
            found = []
            while stack:
                sub = stack.pop()
                if isinstance(sub, (ast.Subscript, ast.Call)) and self._form(sub):
                    found.append(sub)
                stack.extend(ast.iter_child_nodes(sub))
            cache[key] = min(found, key=lambda n: (n.lineno, n.col_offset), default=node)
        return cache[key]

    def _message(self, node: ast.AST, form: str, where: str) -> str:
        code = self.code_of(node)
        code = code if len(code) <= 60 else code[:57] + "..."
        text = _MESSAGES[form].format(code=code, where=where, why=_WHY)
        return f"{text}; {REMEDIES[form]}"


_WHY = (
    "the host waits for the GPU to count the elements (a sync) and torch.compile breaks the "
    "graph there"
)
#: form -> what to do instead (also the runtime advice's fix per sync kind: advice/syncs.py)
REMEDIES = {
    "read": "keep the shape fixed and weight by the mask instead: a masked mean is "
    "`(loss * mask).sum() / mask.sum().clamp(min=1)` (a loss: `reduction='none'` times the "
    "mask, or `ignore_index=`), `torch.where(mask, x, 0)` zeroes the rest",
    "assign": "write `x = torch.where(mask, v, x)` with `v` at x's shape, or "
    "`x.masked_fill_(mask, value)` for one value",
    "update": "write `x = torch.where(mask, x + v, x)` (or `x += v * mask`)",
    "nonzero": "compute with the mask itself (`torch.where(mask, a, b)`, `x * mask`, "
    "`masked_fill`), or take a fixed number of indices with `topk`",
    "unique": "it has no fixed-size form: compute it outside the step (once per dataset, or on "
    "the CPU in the data pipeline / collate_fn), or count over n known classes with "
    "`torch.zeros(n, device=x.device).index_add_(0, x, torch.ones_like(x, dtype=torch.float))`",
    "repeat_interleave": "pass `output_size=` with the total, known on the CPU side of the batch",
}
REMEDIES["masked_select"] = REMEDIES["read"]  # (the same remedy as a mask read)
_READ = "`{code}` selects by a boolean mask {where}: its size depends on the data, so {why}"
#: form -> message (the remedy follows it)
_MESSAGES = {
    "read": _READ,
    "masked_select": _READ,
    "assign": "`{code} = ...` assigns a tensor through a boolean mask {where}: index_put runs "
    "nonzero on the mask, so {why}",
    "update": "`{code}` updates through a boolean mask {where}: reading it runs nonzero, so {why}",
    "nonzero": "`{code}` returns the indices of the true elements {where}: their number depends "
    "on the data, so {why}",
    "unique": "`{code}` {where} has a data-dependent size: {why}",
    "repeat_interleave": "`{code}` repeats by a tensor of counts {where}: without "
    "`output_size=` {why} (it reads repeats.sum() to size the result)",
}


def _reaching(values: list[ast.AST], use: ast.AST) -> list[ast.AST]:
    """The value a name holds at ``use``: the last of its assignments on an earlier line
    (``labels = labels.to(device)`` after ``labels = torch.cat([torch.arange(n)] * 2)``:
    on the device by then, SimCLR's info_nce_loss); all of them when none comes earlier (a
    loop's assignment further down).

    Example:
        >>> fn = ast.parse("y = torch.arange(4)\\ny = y.cuda()\\nz = x[y == 1]").body
        >>> [ast.unparse(v) for v in _reaching([fn[0].value, fn[1].value], fn[2].value)]
        ['y.cuda()']
    """
    earlier = [v for v in values if v.lineno < use.lineno]  # type: ignore[attr-defined]
    if not earlier:
        return values
    return [max(earlier, key=lambda v: (v.lineno, v.col_offset))]  # type: ignore[attr-defined]

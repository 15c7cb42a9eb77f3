"""Whether an expression is a boolean mask (a tensor of True/False), for the rules that report
work whose size depends on the data (TD207): a comparison of tensors (``y != -100``), ``~`` /
``&`` / ``|`` of masks, a call that returns booleans (``torch.isfinite``, ``.bool()``,
``.any(dim)``, a factory with ``dtype=torch.bool``), a ``torch.cat`` / ``torch.stack`` of a list
the same function appends masks to, a call of a function of the project that returns only
such values (``missing_mask(y)``, ``make_pad_mask(lengths)``), a name the same function assigns
only such values, or a
parameter named as a mask (``valid``, ``keep``, ``fg_mask``, 3DGS's ``visibility_filter``; not
``mask_idx``) that no caller in the project hands integer indices, or given to ``torch.where``
as its condition (wav2vec 2.0's ``mask_indices``).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from torchdoctor.lint.call_index import calls_named
from torchdoctor.lint.mask_writes import used_as_condition
from torchdoctor.lint.syntax import same_file_callee
from torchdoctor.lint.tensors import JOINS, python_number
from torchdoctor.lint.visitor import dotted, keyword, method_name

#: torch functions that return a boolean tensor
_BOOL_FUNCTIONS = frozenset(
    f"torch.{n}"
    for n in ("isfinite", "isnan", "isinf", "isneginf", "isposinf", "isreal", "logical_and",
              "logical_or", "logical_xor", "logical_not", "eq", "ne", "gt", "ge", "lt", "le",
              "greater", "greater_equal", "less", "less_equal", "not_equal", "isin", "isclose",
              "signbit"))  # fmt: skip
#: tensor methods that return a boolean tensor (``.any(dim)`` / ``.all(dim)`` too)
_BOOL_METHODS = frozenset(
    {"bool", "eq", "ne", "gt", "ge", "lt", "le", "isnan", "isinf", "isfinite", "isneginf",
     "isposinf", "logical_not", "logical_and", "logical_or", "logical_xor", "isclose",
     "signbit", "greater", "less", "greater_equal", "less_equal", "not_equal"}
)  # fmt: skip
#: methods that keep a mask a mask (same values, another shape or device)
_KEEPS_MASK = frozenset(
    {"detach", "squeeze", "unsqueeze", "view", "reshape", "flatten", "contiguous", "cuda",
     "expand", "expand_as", "clone", "t", "transpose", "permute", "view_as", "reshape_as",
     "repeat", "logical_not"}
)  # fmt: skip
_COMPARISONS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_MASK_OPS = (ast.BitAnd, ast.BitOr, ast.BitXor)
#: parameters named as boolean masks (not as indices: ``mask_idx``, ``keep_ids``)
_MASK_PARAMETER = re.compile(
    r"^(?:\w+_)?(mask|masks|valid|keep|selected|filter)$"  # (3DGS's visibility_filter)
    r"|^(mask|valid|keep)_(?!.*(?:idx|ids|ind|index))\w+$"
)


def _parameters(scope: ast.AST) -> set[str]:
    args = getattr(scope, "args", None)
    return {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)} if args else set()




#: calls whose result is integer indices
_INDEX_MAKERS = frozenset({"randperm", "arange", "argsort", "nonzero", "argwhere", "multinomial"})


def _index_valued(value: ast.AST, scope: ast.AST, rules: Any) -> bool:
    """``value`` is integer indices: a call of :data:`_INDEX_MAKERS` (moved or cast after), or
    a slice of a name assigned one in ``scope``."""
    while isinstance(value, ast.Subscript):
        value = value.value
    if isinstance(value, ast.Name):
        made = [_index_valued(v, scope, rules) for v in rules.assigned_values(scope, value.id)
                if not isinstance(v, ast.Subscript | ast.Name)]  # (no chains of names)
        # (a script's top level also sees its functions' assignments of the name: any)
        return bool(made) and (any(made) if isinstance(scope, ast.Module) else all(made))
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and (
            value.func.attr in ("to", "cuda", "long", "cpu")):  # fmt: skip
        value = value.func.value
    name = (dotted(value.func) or "") if isinstance(value, ast.Call) else ""
    return name.rsplit(".", 1)[-1] in _INDEX_MAKERS


_INVERTED: dict[int, tuple[ast.AST, frozenset[str]]] = {}


def _inverted_in(scope: ast.AST, text: str) -> bool:
    """``text`` is the operand of a ``~`` somewhere in ``scope``: bitwise not of a tensor is
    a logical not on booleans (IMPALA's ``(~batch["done"]).float()``), so it is a mask.

    Example:
        >>> scope = ast.parse("d = (~b['done']).float()\\nr = x[b['done']]")
        >>> _inverted_in(scope, "b['done']"), _inverted_in(scope, "x")
        (True, False)
    """
    cached = _INVERTED.get(id(scope))
    if cached is None or cached[0] is not scope:
        operands = frozenset(
            ast.unparse(node.operand)
            for node in ast.walk(scope)
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert)
        )
        if len(_INVERTED) > 256:
            _INVERTED.clear()
        cached = _INVERTED[id(scope)] = (scope, operands)
    return text in cached[1]


class MaskValues:
    """:meth:`_is_mask` for a rule visitor (it uses ``assigned_values``, ``callee`` and
    ``qualified_names``).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\nclass Head(torch.nn.Module):\\n    def forward(self, x, n):\\n"
        ...        "        keep = []\\n        for i in range(n):\\n            keep.append(x[i] > 0)\\n"
        ...        "        keep = torch.cat(keep)\\n        return x.cuda().flatten()[keep]\\n")
        >>> [(f.code, f.line) for f in lint_source(src)]
        [('TD207', 8)]
    """

    def _is_mask(self, expr: ast.AST, scope: ast.AST, depth: int = 0) -> bool:
        if isinstance(expr, ast.Compare):
            return self._tensor_comparison(expr)
        if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Invert):
            return self._is_mask(expr.operand, scope, depth)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, _MASK_OPS):
            left = self._is_mask(expr.left, scope, depth)
            right = self._is_mask(expr.right, scope, depth)
            plain = (ast.Name, ast.Attribute, ast.Subscript)
            return (left and (right or isinstance(expr.right, plain))) or (
                right and isinstance(expr.left, plain)
            )
        if (isinstance(expr, ast.Attribute) or isinstance(expr, ast.Subscript) and isinstance(
                expr.slice, ast.Constant) and isinstance(expr.slice.value, str)) and _inverted_in(
                scope, ast.unparse(expr)):  # fmt: skip
            return True  # (`~batch["done"]` in the function: a tensor of booleans; `~i` of a
            # plain name can be a Python int's reverse index)
        if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant) and isinstance(
                expr.slice.value, str) and _MASK_PARAMETER.search(expr.slice.value):  # fmt: skip
            return True  # (mb["response_mask"]: a batch's entry named as a mask)
        if isinstance(expr, ast.Subscript):  # mask[:, 0]
            return self._is_mask(expr.value, scope, depth)
        if isinstance(expr, ast.Call):
            return self._returns_a_mask(expr, scope, depth)
        if isinstance(expr, ast.Name) and depth < 3:
            values = self.assigned_values(scope, expr.id)
            if len(values) > 1:  # (keep = [] before keep = torch.cat(keep): the list it joins)
                values = [v for v in values if not (isinstance(v, ast.List) and not v.elts)]
            if not values and self._unpacked_masks(scope, expr.id, depth):
                return True  # (inp, labels, selected = mask_tokens(tokens))
            if not values:  # (a parameter named as a mask: `def silog_loss(pred, gt, valid)`)
                return expr.id in _parameters(scope) and (
                    _MASK_PARAMETER.search(expr.id) is not None  # (mask_indices given to
                    or used_as_condition(scope, expr.id)  # torch.where: wav2vec 2.0's booleans)
                    or self._given_masks(scope, expr.id, depth)
                ) and not self._given_indices(scope, expr.id)
            return all(self._is_mask(v, scope, depth + 1) for v in values)
        return False

    def _unpacked_masks(self, scope: ast.AST, name: str, depth: int) -> bool:
        """``name`` is bound only by unpacking the tuple a function of the project returns
        (``inp, labels, selected = mask_tokens(tokens)``), and every ``return`` of it gives a
        mask at that position (an MLM's masking helper returning its selection)."""
        found = False
        for node in ast.walk(scope):
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Tuple)):  # fmt: skip
                continue
            names = [e.id if isinstance(e, ast.Name) else None for e in node.targets[0].elts]
            if name not in names:
                continue
            if depth >= 2 or any(isinstance(e, ast.Starred) for e in node.targets[0].elts) or not (
                    isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)):  # fmt: skip
                return False
            function = same_file_callee(node.value)
            project = self.context.project
            if function is None and project is not None:
                function = project.module_function(node.value.func.id)
            at = names.index(name)
            returns = [n.value for n in ast.walk(function)
                       if isinstance(n, ast.Return)] if function is not None else []  # fmt: skip
            if not returns or not all(
                isinstance(r, ast.Tuple) and len(r.elts) == len(names)
                and self._is_mask(r.elts[at], function, depth + 1) for r in returns
            ):  # fmt: skip
                return False
            found = True
        return found

    def _given_indices(self, scope: ast.AST, name: str) -> bool:
        """Every call of the function ``scope`` in this file (or of the method, in the project's
        files calling it) passes, for its parameter ``name``,
        integer indices: a name assigned a slice of (or a call to) ``torch.randperm`` /
        ``arange`` / ``argsort`` / ``nonzero`` (pytorch/examples' GCN: ``mask_train`` is
        ``idx[1500:]`` of a permutation: a gather of fixed size, no sync)."""
        tree, function = self.context.tree, getattr(scope, "name", None)
        params = [a.arg for a in (*scope.args.posonlyargs, *scope.args.args)] if function else []
        if tree is None or name not in params:
            return False
        position, found = params.index(name), False
        if params[0] == "self":  # (a method: `obj.gather(rows)` passes rows first)
            position -= 1
        project, pattern = self.context.project, re.compile(rf"\.{re.escape(function)}\s*\(")
        others = [project.tree(p) for p in project.paths if p != self.context.path
                  and pattern.search(project.text(p))] if project is not None else []  # fmt: skip
        for call in (c for t in (tree, *others) if t is not None for c in ast.walk(t)):
            if not (isinstance(call, ast.Call) and (dotted(call.func) or "").rsplit(".", 1)[-1]
                    == function and 0 <= position < len(call.args)):  # fmt: skip
                continue
            argument, caller = call.args[position], self.enclosing_scope(call)
            values = self.assigned_values(caller, argument.id) if isinstance(
                argument, ast.Name) else [argument]  # (another file's callers too)
            if not values or not all(_index_valued(v, caller, self) for v in values):
                return False
            found = True
        return found

    def _given_masks(self, scope: ast.AST, name: str, depth: int) -> bool:
        """Every call of the function ``scope`` in this file passes, for its parameter
        ``name``, a value its caller knows to be a mask (``pos = pos.flatten(1).to(torch.bool)``
        before ``targets(videos, pos)``), and at least one call does."""
        tree, function = self.context.tree, getattr(scope, "name", None)
        params = [a.arg for a in (*scope.args.posonlyargs, *scope.args.args)] if function else []
        if tree is None or name not in params or depth >= 2:
            return False
        method = bool(params) and params[0] == "self"
        position, found = params.index(name) - method, False
        for call in calls_named(self, str(function)):  # (indexed once per file)
            if any(isinstance(a, ast.Starred) for a in call.args):
                continue
            func = call.func
            if not ((isinstance(func, ast.Name) and func.id == function and not method) or (
                    method and isinstance(func, ast.Attribute) and func.attr == function
                    and dotted(func.value) == "self")):  # fmt: skip
                continue
            argument = keyword(call, name)
            if argument is None and 0 <= position < len(call.args):
                argument = call.args[position]
            if argument is None:
                continue  # (a default)
            if not self._is_mask(argument, self.enclosing_scope(call), depth + 1):
                return False
            found = True
        return found

    def _joins_masks(self, call: ast.Call, scope: ast.AST, depth: int) -> bool:
        """``torch.cat(fg_masks)`` where the function appends masks to the list ``fg_masks``
        (one appended mask is enough: a list holds one kind of value)."""
        if not call.args or not isinstance(call.args[0], ast.Name) or depth >= 3:
            return False
        listed = call.args[0].id
        return any(
            isinstance(node, ast.Call) and method_name(node) == "append" and len(node.args) == 1
            and isinstance(node.func.value, ast.Name) and node.func.value.id == listed  # type: ignore[attr-defined]
            and self._is_mask(node.args[0], scope, depth + 1)
            for node in ast.walk(scope)
        )  # fmt: skip

    def _returns_a_mask(self, call: ast.Call, scope: ast.AST, depth: int) -> bool:
        if self._helper_returns_masks(call, depth):
            return True
        names = self.callee(call)
        if names:
            if names & _BOOL_FUNCTIONS:
                return True
            if names & JOINS:
                return self._joins_masks(call, scope, depth)
            dtype = keyword(call, "dtype")
            return (
                any(n.startswith("torch.") for n in names)
                and dtype is not None
                and "torch.bool" in self.qualified_names(dtype)
            )
        name = method_name(call)
        if name in _BOOL_METHODS:
            return True
        if name in {"any", "all"}:
            return bool(call.args) or keyword(call, "dim") is not None
        if name == "to":
            if any("torch.bool" in self.qualified_names(a) for a in call.args):
                return True
            return keyword(call, "dtype") is None and bool(call.args) and all(
                _a_device(a) for a in call.args) and self._is_mask(call.func.value, scope, depth)
        return name in _KEEPS_MASK and self._is_mask(call.func.value, scope, depth)

    def _helper_returns_masks(self, call: ast.Call, depth: int) -> bool:
        """``call`` runs a function of the project (this file's function or method, or a
        module-level function of another file) whose every ``return`` gives a mask
        (``def missing_mask(y): return ~torch.isnan(y)``, ESPnet's ``make_pad_mask``)."""
        if depth >= 2 or not isinstance(call.func, ast.Name | ast.Attribute):
            return False
        function = same_file_callee(call)
        project = self.context.project
        if function is None and isinstance(call.func, ast.Name) and project is not None:
            function = project.module_function(call.func.id)
        if function is None:
            return False
        returns = [n.value for n in ast.walk(function) if isinstance(n, ast.Return)]
        return bool(returns) and all(
            r is not None and self._is_mask(r, function, depth + 1) for r in returns)

    def _tensor_comparison(self, cmp: ast.Compare) -> bool:
        """One ``==``/``!=``/``<``/... comparison that can be of tensors: not of literals
        only, strings or None, nor of sizes (``x.shape[0] > 1``, ``len(x) == 2``)."""
        if len(cmp.ops) != 1 or not isinstance(cmp.ops[0], _COMPARISONS):
            return False  # a chained comparison of tensors raises: these are Python values
        operands = [cmp.left, *cmp.comparators]
        if any(
            isinstance(o, (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.JoinedStr))
            or (isinstance(o, ast.Constant) and not isinstance(o.value, (int, float)))
            for o in operands
        ):
            return False
        return any(not isinstance(o, ast.Constant) and not python_number(o) for o in operands)


def _a_device(arg: ast.AST) -> bool:
    """A device, which ``.to(...)`` moves a mask to without changing its dtype: ``device``,
    ``self.args.device``, ``x.device``, ``"cuda"``, ``torch.device(...)``; not a tensor
    (``mask.to(probs)`` casts to its dtype) nor a dtype.

    Example:
        >>> [_a_device(ast.parse(s, mode="eval").body) for s in ("self.args.device", "'cuda'", "probs")]
        [True, True, False]
    """
    if isinstance(arg, ast.Constant):
        return isinstance(arg.value, str) and arg.value.split(":")[0] in {"cuda", "cpu", "mps", "xpu"}
    if isinstance(arg, ast.Call):
        return dotted(arg.func) == "torch.device"
    name = dotted(arg) or ""
    return name.rsplit(".", 1)[-1] in {"device", "dev", "_device"}

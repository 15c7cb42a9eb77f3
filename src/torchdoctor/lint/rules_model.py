"""TD506 convolution bias followed by BatchNorm (TD507, hand-written attention: rules_attention.py)."""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.module_lists import appended, layer_name, module_list_item, zipped_layers
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.syntax import statement_list
from torchdoctor.lint.visitor import (
    FUNCTIONS,
    RuleVisitor,
    constant,
    dotted,
    method_name,
    replace_call_with,
    segment,
    with_keyword,
)

_CONV = re.compile(
    r"^torch\.nn\.(modules\.conv\.)?(Conv[123]d|LazyConv[123]d|ConvTranspose[123]d)$")
_BATCH_NORM = re.compile(r"^torch\.nn\.(modules\.batchnorm\.)?(BatchNorm[123]d|SyncBatchNorm)$")
SEQUENTIAL = frozenset({"torch.nn.Sequential", "torch.nn.modules.container.Sequential"})

#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).
RULES = (
    Rule(
        "TD506",
        "conv-bias-before-batchnorm",
        "info",
        "convolution with a bias directly followed by BatchNorm (the norm subtracts the mean, "
        "so the bias is computed and stored for nothing)",
        "bias=False on the convolution; --fix adds it (a checkpoint with conv biases then "
        "needs strict=False or a key filter)",
        "torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16))",
        "torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, bias=False), torch.nn.BatchNorm2d(16))",
        autofix=True,
    ),
)


class ModelRules(RuleVisitor):
    """TD506 conv bias before BatchNorm.

    Example:
        >>> "TD506" in ModelRules.CODES
        True
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"BatchNorm",),)

    def visit_Call(self, node: ast.Call) -> None:
        if self.callee(node) & SEQUENTIAL or self._sequential_init(node):
            self._check_layers(node.args, node)

    def _sequential_init(self, call: ast.Call) -> bool:
        """``super().__init__(conv, bn, act)`` in a subclass of nn.Sequential (mmcv's
        ConvModule, torchvision's Conv2dNormActivation): the layers of a Sequential."""
        if method_name(call) != "__init__" or not isinstance(call.func.value, ast.Call):
            return False
        owner = self.parent(self.enclosing_scope(call))
        return isinstance(owner, ast.ClassDef) and any(
            self.qualified_names(base) & SEQUENTIAL for base in owner.bases)

    def visit_List(self, node: ast.List) -> None:
        """``layers = [nn.Conv2d(...), nn.BatchNorm2d(...), nn.ReLU()]`` (then Sequential);
        ``OrderedDict([("conv", nn.Conv1d(...)), ("bn", nn.BatchNorm1d(...))])``."""
        self._check_layers(node.elts, node)

    visit_Tuple = visit_List

    def _check_layers(self, layers: list[ast.expr], node: ast.AST) -> None:
        found = [self._layer(layer, node) for layer in layers]
        for k, (conv, norm) in enumerate(zip(found, found[1:])):
            if self._is_conv(conv) and self._is_batch_norm(norm):
                named = layers[k].id if isinstance(layers[k], ast.Name) else None
                shared = named is not None and self._also_without_norm(named, node)
                self._report_conv(conv, shared)  # type: ignore[arg-type]

    def _also_without_norm(self, name: str, node: ast.AST) -> bool:
        """``name`` also sits in a layer list where no BatchNorm follows it (VGG's ``layers +=
        [conv2d, nn.ReLU(inplace=True)]`` when ``batch_norm`` is off)."""
        for other in ast.walk(self.enclosing_scope(node)):
            elts = other.elts if isinstance(other, (ast.List, ast.Tuple)) else (
                other.args if isinstance(other, ast.Call) and self.callee(other) & SEQUENTIAL
                else [])  # fmt: skip
            for k, elt in enumerate(elts):
                if isinstance(elt, ast.Name) and elt.id == name and not (
                        k + 1 < len(elts) and self._is_batch_norm(elts[k + 1])):  # fmt: skip
                    return True
        return False

    def _layer(self, expr: ast.AST, node: ast.AST) -> ast.AST | None:
        """The module call a layer list holds: itself, the module of a ``("name", module)``
        pair, or the one call assigned to a name (VGG's ``conv2d = nn.Conv2d(...)``, then
        ``layers += [conv2d, nn.BatchNorm2d(v), ...]``)."""
        if isinstance(expr, ast.Tuple) and len(expr.elts) == 2 and isinstance(
                constant(expr.elts[0]), str):  # fmt: skip
            expr = expr.elts[1]
        if isinstance(expr, ast.Name):
            values = self.assigned_values(self.enclosing_scope(node), expr.id)
            return values[0] if len(values) == 1 else None
        return expr

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        """``self.conv = nn.Conv2d(...)``, ``self.bn = nn.BatchNorm2d(...)`` and ``forward``
        computes ``self.bn(self.conv(x))``."""
        # each assignment with the statement list it sits in: `if use_bn: conv, BatchNorm;
        # else: conv, GroupNorm` pairs each conv with its own branch's norm
        convs: dict[str, list[tuple[ast.Call, int]]] = {}
        norms: dict[str, list[tuple[int, bool]]] = {}
        forward = None
        for item in node.body:
            if isinstance(item, FUNCTIONS) and item.name == "forward":
                forward = item
            if not (isinstance(item, FUNCTIONS) and item.name == "__init__"):
                continue
            for stmt in ast.walk(item):
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    name = dotted(stmt.targets[0]) or ""
                    value = module_list_item(stmt.value)
                elif isinstance(stmt, ast.Expr) and appended(stmt.value):  # (ModuleLists
                    name = dotted(stmt.value.func.value) or ""  # filled in a loop: PointNet++)
                    value = stmt.value.args[0]
                else:
                    continue
                block = id(statement_list(self.parent(stmt), stmt))  # (its branch)
                if self._is_conv(value):
                    convs.setdefault(name, []).append((value, block))
                else:
                    norms.setdefault(name, []).append((block, self._is_batch_norm(value)))
        if forward is None or not convs or not any(bn for n in norms.values() for _, bn in n):
            return
        zipped = zipped_layers(forward)  # `for conv, bn in zip(self.convs, self.bns):`
        for call in ast.walk(forward):
            sites = norms.get(layer_name(call, zipped)) if isinstance(call, ast.Call) else None
            if not sites or not call.args:
                continue
            inner = call.args[0]
            if isinstance(inner, ast.Name):  # (x = self.downConv(x); x = self.norm(x))
                inner = self._made_just_before(call, inner.id) or inner
            for conv, block in convs.get(layer_name(inner, zipped), ()) if isinstance(inner, ast.Call) else ():
                same = [bn for where, bn in sites if where == block]
                if any(same) or (not same and any(bn for _, bn in sites)):
                    # (a norm that is BatchNorm in one branch of __init__ and GroupNorm or an
                    # identity in another, RAFT's norm_fn: the bias counts there, no autofix)
                    self._report_conv(conv, shared=not same and not all(bn for _, bn in sites))

    def _made_just_before(self, call: ast.AST, name: str) -> ast.Call | None:
        """The call the statement before ``call``'s assigns to ``name`` (Informer's ConvLayer:
        ``x = self.downConv(x.permute(0, 2, 1))``, then ``x = self.norm(x)``); None otherwise."""
        stmt = call
        while stmt is not None and not isinstance(stmt, ast.stmt):
            stmt = self.parent(stmt)
        block = statement_list(self.parent(stmt), stmt) if stmt is not None else None
        k = next((i for i, s in enumerate(block or ()) if s is stmt), 0)
        prev = block[k - 1] if block and k > 0 else None
        if (isinstance(prev, ast.Assign) and len(prev.targets) == 1
                and isinstance(prev.targets[0], ast.Name) and prev.targets[0].id == name
                and isinstance(prev.value, ast.Call)):  # fmt: skip
            return prev.value
        return None

    # -- TD506 -------------------------------------------------------------------------------
    def _is_conv(self, expr: ast.AST) -> bool:
        return isinstance(expr, ast.Call) and any(_CONV.match(n) for n in self.callee(expr))

    def _is_batch_norm(self, expr: ast.AST) -> bool:
        return isinstance(expr, ast.Call) and any(_BATCH_NORM.match(n) for n in self.callee(expr))

    def _report_conv(self, conv: ast.Call, shared: bool = False) -> None:
        bias = next((kw for kw in conv.keywords if kw.arg == "bias"), None)
        if bias is not None and constant(bias.value) is not True:
            return  # bias=False, or decided by a variable
        if bias is None and len(conv.args) >= 8:
            return  # passed positionally
        if any(isinstance(a, ast.Starred) for a in conv.args) or any(
            kw.arg is None for kw in conv.keywords
        ):
            return
        source = segment(self.context.lines, conv) or ""
        fix = None
        if "#" not in source and source.endswith(")") and not shared:
            if bias is not None:
                start = bias.value.col_offset - conv.col_offset
                end = bias.value.end_col_offset - conv.col_offset
                if bias.value.lineno == conv.lineno == bias.value.end_lineno and source.isascii():
                    fix = replace_call_with(source[:start] + "False" + source[end:])
            else:
                fix = replace_call_with(with_keyword(source, "bias=False"))
        self.report(
            conv,
            "TD506",
            f"`{self.code_of(conv.func)}` has a bias and feeds BatchNorm directly: the norm "
            "subtracts the batch mean, so the bias is wasted work and memory; pass bias=False"
            + (" where BatchNorm follows it (here it also feeds layers without one: make its "
               "bias depend on the same switch)" if shared else ""),
            fix=fix,
        )

"""TD507: hand-written attention where ``F.scaled_dot_product_attention`` fits (seed 001, the
Performance Tuning Guide).

softmax(q @ k^T * scale (+ mask)) @ v written out computes and keeps the T x T weights; the
fused kernel does not. Its gain depends on the attention's form (suite ``fused``): causal
attention 1.42x-1.97x on a CPU, without a mask 1.15x-1.26x, and channels first (``(batch x heads,
channels, tokens)``, a U-Net's legacy attention: ``einsum("bct,bcs->bts", q, k)``) 0.83x-1.28x
with the transposes SDPA's layout needs; the message says which (``no mask``, ``channels
first``), and the profile's cure takes its speedup from that.
"""

from __future__ import annotations

import ast
import re

from torchdoctor.lint.returned_values import discarded_by_callers, returned_at
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import RuleVisitor, dotted, method_name

SOFTMAX = frozenset({"torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax"})
MATMUL_CALLS = frozenset({"torch.matmul", "torch.bmm", "torch.einsum", "torch.baddbmm"})
SDPA = "scaled_dot_product_attention"
#: a test of whether the fused kernel exists (torch's version, hasattr, an ``*_AVAILABLE`` flag)
_CAPABILITY = re.compile(r"hasattr|getattr|(?i:available)|version|\bTORCH_\w+|is_torch_\w+")

RULES = (
    Rule(
        "TD507",
        "manual-attention",
        "warning",
        "hand-written attention softmax(q @ k.T / sqrt(d)) @ v (also behind a switch of the "
        "model's own, if self.fused: ... else: ...; not as the fallback of a function that "
        "calls the fused kernel where torch has it, if hasattr(F, "
        "'scaled_dot_product_attention'))",
        "torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=..., "
        "is_causal=...) runs a fused flash / memory-efficient kernel",
        "att = torch.softmax(q @ k.transpose(-2, -1) / 8.0, dim=-1)\ny = att @ v",
        "y = torch.nn.functional.scaled_dot_product_attention(q, k, v)",
        seed="001",
    ),)


class AttentionRules(RuleVisitor):
    """TD507 (see the module docstring).

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> src = ("import torch\\n"
        ...        "def attend(q, k, v):\\n"
        ...        "    att = torch.softmax(q @ k.transpose(-2, -1) / 8.0, dim=-1)\\n"
        ...        "    return att @ v\\n")
        >>> [(f.line, f.code) for f in lint_source(src)]
        [(3, 'TD507')]
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"softmax", r"@|matmul|bmm|einsum"),)

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        if names & SOFTMAX or (method_name(node) == "softmax" and not names) or (
            self._softmax_module(node)
        ):
            self._check_attention(node)

    def _softmax_module(self, call: ast.Call) -> bool:
        """``self.softmax(attn)``, ``self.softmax = nn.Softmax(-1)`` in the class (Swin's)."""
        name = dotted(call.func) or ""
        if not name.startswith("self.") or name.count(".") != 1 or len(call.args) != 1:
            return False
        owner, made = self.parent(self.enclosing_scope(call)), self.__dict__.setdefault(
            "_softmax_attributes", {})  # (per class, once: each self.f(x) walked its class)
        if isinstance(owner, ast.ClassDef) and owner not in made:
            made[owner] = {dotted(t) for n in ast.walk(owner) if isinstance(n, ast.Assign)
                           and isinstance(n.value, ast.Call) and any(
                               q.endswith("Softmax") for q in self.callee(n.value))
                           for t in n.targets}  # fmt: skip
        return isinstance(owner, ast.ClassDef) and name in made[owner]

    def _scores_line(self, expr: ast.AST, scope: ast.AST, depth: int = 0) -> int | None:
        """The line of ``q @ k.transpose(-2, -1)`` (or a matmul of a transposed operand, or an
        einsum of two operands that each keep an index: ``bhid,bhjd->bhij``) in ``expr``,
        directly or through a name assigned such a value in ``scope`` before ``expr``; None
        when there is none."""
        for node in ast.walk(expr):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                if _transposed(node.right):
                    return node.lineno
            elif isinstance(node, ast.Call) and self.callee(node) & MATMUL_CALLS:
                if "torch.einsum" in self.callee(node):
                    if _pairwise_einsum(node):
                        return node.lineno
                elif any(_transposed(self._named(a, scope)) for a in node.args[1:2]) or (
                    len(node.args) == 2 and _transposed(self._named(node.args[0], scope))
                ):  # (channels first: q^T @ k, DCP's point features; through names: DANet's
                    return node.lineno  # bmm(q, k) of q = conv(x).view(...).permute(0, 2, 1))
            elif isinstance(node, ast.Name) and depth < 3:
                for value in sorted(self.assigned_values(scope, node.id),  # (the nearest
                                    key=lambda v: -v.lineno):  # first: another branch's too)
                    if value is not expr and value.lineno <= node.lineno and not (
                            value.lineno == node.lineno and value.col_offset <= node.col_offset
                            <= (value.end_col_offset or 0)):  # (before; not its own value)
                        line = self._scores_line(value, scope, depth + 1)
                        if line is not None:
                            return line
        return None

    def _named(self, expr: ast.AST, scope: ast.AST) -> ast.AST:
        """The one value a name is assigned in ``scope``, else ``expr`` itself."""
        if isinstance(expr, ast.Name):
            values = self.assigned_values(scope, expr.id)
            if len(values) == 1:
                return values[0]
        return expr

    def _check_attention(self, call: ast.Call) -> None:
        scope = self.enclosing_scope(call)
        method = method_name(call) == "softmax" and not self.callee(call) and not (
            self._softmax_module(call))  # (s.softmax(-1), not self.softmax(s): an nn.Softmax)
        source = call.func.value if method else (call.args[0] if call.args else None)  # type: ignore[attr-defined]
        first = None if source is None else self._scores_line(source, scope)
        if first is None:
            return
        if any(
            isinstance(n, ast.Attribute | ast.Name) and SDPA in (dotted(n) or "")
            for n in ast.walk(scope)
        ) and self._fallback(scope):
            return  # the function already offers the fused kernel (a fallback path)
        last = self._values_line(call, scope)
        if last is None:
            return
        lines = (min(first, call.lineno), max(last, call.end_lineno or call.lineno))
        self.report(
            call,
            "TD507",
            f"hand-written attention (`{self.code_of(call)}` of q @ k^T, then @ v): "
            "F.scaled_dot_product_attention(q, k, v, attn_mask=..., is_causal=...) computes "
            "it with a fused flash / memory-efficient kernel" + self._form(scope, lines),
            pattern_lines=lines if lines[0] < lines[1] else None,
        )

    def _form(self, scope: ast.AST, lines: tuple[int, int]) -> str:
        """What the attention's form does to SDPA's gain (the profile's cure reads it): no mask
        in the pattern's lines (1.15x-1.26x on a CPU, where causal attention gains 1.42x-1.97x),
        q and k channels first (``einsum("bct,bcs->bts")``, ``bmm(q.transpose(1, 2), k)``: SDPA
        needs tokens first, and the transposes cost: 0.83x at 256 tokens)."""
        inside = [n for n in ast.walk(scope)
                  if lines[0] <= getattr(n, "lineno", 0) <= lines[1]]  # fmt: skip
        masked = any(
            (isinstance(n, ast.Call) and (method_name(n) in _MASKING or self.callee(n) & _WHERE))
            or (isinstance(n, ast.Name | ast.Attribute) and _MASK_NAME.search(dotted(n) or ""))
            for n in inside
        )  # fmt: skip
        first = any(isinstance(n, ast.Call) and _channels_first(n, self.callee(n)) for n in inside)
        if first:
            return ("; no mask, and channels first (batch x heads, channels, tokens): SDPA needs "
                    "tokens first, and the transposes cost (suite fused attention_layouts: 0.83x "
                    "at 256 tokens, 1.28x at 1,024)") if not masked else (
                "; channels first (batch x heads, channels, tokens): SDPA needs tokens first, "
                "and the transposes cost (0.83x at 256 tokens, 1.28x at 1,024)")  # fmt: skip
        return "" if masked else "; no mask: SDPA gains less there (1.15x-1.26x on a CPU)"

    def _fallback(self, scope: ast.AST) -> bool:
        """The hand-written attention of a function that also calls the fused kernel is a
        fallback for where it is missing (nanoGPT's ``self.flash = hasattr(F,
        'scaled_dot_product_attention')``, Whisper's ``SDPA_AVAILABLE``, a ``try``/``except``)
        unless the branch that runs it is a switch of the model's own (``if self.fused:``
        from a constructor argument): then it runs whenever a user turns that off."""
        tests = [  # the branches that choose the fused kernel (if/else, an early return)
            node.test for node in ast.walk(scope)
            if isinstance(node, ast.If | ast.IfExp) and any(
                isinstance(n, ast.Attribute | ast.Name) and SDPA in (dotted(n) or "")
                for n in ast.walk(node) if n is not node.test)
        ]  # fmt: skip
        if not tests:
            return True
        texts = [ast.unparse(t) for t in tests]
        owner = self.parent(scope)
        for test in tests:
            for flag in ast.walk(test):
                if isinstance(flag, ast.Attribute) and dotted(flag.value) == "self" and isinstance(
                        owner, ast.ClassDef):  # fmt: skip
                    texts += [ast.unparse(a.value) for a in ast.walk(owner)
                              if isinstance(a, ast.Assign) and any(
                                  dotted(t) == f"self.{flag.attr}" for t in a.targets)]  # fmt: skip
        return any(_CAPABILITY.search(t) for t in texts)

    def _weights_used_otherwise(self, name: str, scope: ast.AST, after: int) -> bool:
        """The attention weights are returned, stored or inspected (token merging, attention
        maps): the fused kernel does not return them, so the hand-written form is needed."""
        for use in ast.walk(scope):
            if (
                isinstance(use, ast.Name)
                and use.id == name
                and isinstance(use.ctx, ast.Load)
                and use.lineno > after
            ):
                if not _is_weights_plumbing(use, self.parent(use)) and not self._discarded(use):
                    return True
        return False

    def _discarded(self, use: ast.Name) -> bool:
        """The weights are returned beside the output of a module's method, and every call
        of the module in the file drops them (``ctx, _ = self.attn(h, enc)``)."""
        scope = self.enclosing_scope(use)
        position, owner = returned_at(use), self.parent(scope)
        owner = scope if isinstance(owner, ast.Module) else owner  # (a module-level function)
        return (position is not None and isinstance(owner, ast.ClassDef | ast.FunctionDef)
                and self.context.tree is not None
                and discarded_by_callers(self.context.tree, owner, position))  # fmt: skip

    def _values_line(self, call: ast.Call, scope: ast.AST) -> int | None:
        """The line where the softmax result is multiplied by the values, directly or through
        names (the first such product after the softmax); None when it is not."""
        node, parent = call, self.parent(call)
        while True:
            if (isinstance(parent, ast.Call) and node in parent.args  # dropout(softmax(...))
                    and not self.callee(parent) & MATMUL_CALLS):  # (bmm(softmax(...), v):
                node, parent = parent, self.parent(parent)  # the product itself)
            elif isinstance(parent, ast.Attribute) and parent.attr in _CASTS | _CLEANUPS and (
                    isinstance(self.parent(parent), ast.Call)):  # .to(q.dtype): Whisper's
                node = self.parent(parent)
                parent = self.parent(node)
            else:
                break  # fmt: skip
        if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.MatMult):
            return parent.lineno
        if isinstance(parent, ast.Call) and self.callee(parent) & MATMUL_CALLS:
            return parent.lineno
        if not (isinstance(parent, ast.Assign) and isinstance(parent.targets[0], ast.Name)):
            return None
        name = parent.targets[0].id
        if self._weights_used_otherwise(name, scope, parent.end_lineno or parent.lineno):
            return None
        products = []
        for other in ast.walk(scope):
            if isinstance(other, ast.BinOp) and isinstance(other.op, ast.MatMult):
                left = other.left  # (self.drop(att) @ v: the weights through a dropout)
                if isinstance(left, ast.Call) and len(left.args) == 1 and not left.keywords:
                    left = left.args[0]
                if isinstance(left, ast.Name) and left.id == name:
                    products.append(other.lineno)
            if isinstance(other, ast.Call) and self.callee(other) & MATMUL_CALLS:
                if any(isinstance(a, ast.Name) and a.id == name  # (matmul(v, att.transpose(2, 1)),
                       for a in map(_untransposed, map(_through_dropout, other.args))):  # fmt: skip
                    products.append(other.lineno)  # matmul(self.dropout(att), v): DETR's)
        after = [line for line in products if line >= call.lineno]
        return min(after or products) if products else None


#: casts between the softmax and the product with the values (a float32 softmax in fp16 code)


_CASTS = frozenset({"to", "float", "half", "bfloat16", "type", "type_as"})
#: elementwise clean-ups of the weights before the product: the NaN rows of fully masked
#: queries zeroed (SASRec's ``att.softmax(-1).nan_to_num(0.0) @ v``), padding masked out
_CLEANUPS = frozenset({"nan_to_num", "masked_fill"})


def _is_weights_plumbing(use: ast.Name, parent: ast.AST | None) -> bool:
    """``att @ v``, ``dropout(att)``, ``att.masked_fill(...)``, ``att = att``: uses that only
    carry the attention weights on to the product with the values."""
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.MatMult):
        return True
    if isinstance(parent, ast.Assign):
        return True
    if isinstance(parent, ast.Call):
        name = (dotted(parent.func) or "").lower()
        return "drop" in name or name.endswith(("matmul", "bmm", "einsum"))
    if isinstance(parent, ast.Attribute) and parent.attr in {"masked_fill", "to", "type_as",
                                                             "transpose", "permute", "contiguous",
                                                             "nan_to_num"}:
        return True  # (DANet's bmm(v, att.permute(0, 2, 1)))
    return False


def _through_dropout(expr: ast.AST) -> ast.AST:
    """The argument of a one-argument call (``self.dropout(att)``), else ``expr``."""
    if isinstance(expr, ast.Call) and len(expr.args) == 1 and not expr.keywords:
        return expr.args[0]
    return expr


def _untransposed(expr: ast.AST) -> ast.AST:
    """``att`` of ``att.transpose(2, 1).contiguous()`` (the weights, turned for the product).

    Example:
        >>> ast.unparse(_untransposed(ast.parse("a.transpose(2, 1).contiguous()", mode="eval").body))
        'a'
    """
    while isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and (
        expr.func.attr in {"transpose", "contiguous", "mT", "permute"}
    ):
        expr = expr.func.value
    return expr


#: calls and names that put a mask on the scores (a causal one: minGPT's ``self.bias``)
_MASKING = frozenset({"masked_fill", "masked_fill_", "tril", "triu"})
_WHERE = frozenset({"torch.where", "torch.tril", "torch.triu"})
_MASK_NAME = re.compile(r"(?i)mask|(^|\.)bias$|causal")


def _channels_first(call: ast.Call, names: set[str]) -> bool:
    """q and k multiplied channels first: an einsum whose contracted index comes before each
    operand's own (``bct,bcs->bts``), or ``bmm(q.transpose(1, 2), k)`` / ``matmul(q^T, k)``.

    Example:
        >>> call = lambda text: ast.parse(text).body[0].value
        >>> _channels_first(call("torch.einsum('bct,bcs->bts', q, k)"), {"torch.einsum"})
        True
        >>> _channels_first(call("torch.einsum('bhid,bhjd->bhij', q, k)"), {"torch.einsum"})
        False
    """
    if "torch.einsum" in names:
        equation = call.args[0] if call.args else None
        if not (isinstance(equation, ast.Constant) and isinstance(equation.value, str)):
            return False
        text = equation.value.replace(" ", "").replace("...", "")
        if "->" not in text or text.count(",") != 1:
            return False
        (a, b), out = text.split("->", 1)[0].split(","), text.split("->", 1)[1]
        shared = [c for c in a if c in b and c not in out]
        return len(shared) == 1 and not (a.endswith(shared[0]) and b.endswith(shared[0]))
    return bool(names & {"torch.bmm", "torch.matmul"}) and len(call.args) == 2 and _transposed(
        call.args[0]) and not _transposed(call.args[1])  # fmt: skip


def _pairwise_einsum(call: ast.Call) -> bool:
    """An einsum of two operands that could be q and k: each keeps an index of its own in the
    output (``b h i d, b h j d -> b h i j``); not a weighted sum (``... k d, ... k -> ... d``,
    a mixture of softmaxes). An equation that is not a literal is given the benefit.

    Example:
        >>> einsum = lambda eq: ast.parse(f"torch.einsum({eq!r}, a, b)").body[0].value
        >>> _pairwise_einsum(einsum("bhid,bhjd->bhij")), _pairwise_einsum(einsum("...kd,...k->...d"))
        (True, False)
    """
    equation = call.args[0] if call.args else None
    if not (isinstance(equation, ast.Constant) and isinstance(equation.value, str)):
        return True  # (an f-string: x-transformers' f'b h i d, {kv_einsum_eq} -> b h i j')
    text = equation.value.replace(" ", "").replace("...", "")
    if "->" not in text:
        return True
    inputs, output = text.split("->", 1)
    operands = inputs.split(",")
    if len(operands) != 2:
        return False
    first, second = (set(o) for o in operands)
    return bool((first - second) & set(output)) and bool((second - first) & set(output))


def _transposed(expr: ast.AST) -> bool:
    """``k.transpose(-2, -1)``, ``k.mT``, ``k.T``, ``k.permute(...)``, ``k.t()`` (then
    ``.contiguous()`` or not)."""
    if isinstance(expr, ast.Call) and method_name(expr) == "contiguous":
        expr = expr.func.value  # type: ignore[attr-defined]
    if isinstance(expr, ast.Attribute) and expr.attr in {"mT", "T", "mH", "H"}:
        return True
    return isinstance(expr, ast.Call) and method_name(expr) in {"transpose", "permute", "t"}


"""TD5xx: precision and engine: whole-model fp16 casts and deprecated AMP/SDPA entry points.

The deprecation rules fix themselves: each plans the replacement call's text as it detects
(from the call's own source segments) and records a LibCST rewrite that swaps it in and
updates the imports (applied by :mod:`torchdoctor.lint.fixes`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

from torchdoctor.lint.eval_loops import returns_eval_model
from torchdoctor.lint.rule import Rule
from torchdoctor.lint.visitor import MODEL_NAME, RuleVisitor, constant, dotted, method_name, segment

HALF = frozenset({"torch.float16", "torch.half"})
SDP_KERNEL = frozenset({"torch.backends.cuda.sdp_kernel"})
AUTOCAST = {
    "torch.cuda.amp.autocast": "cuda",
    "torch.cuda.amp.autocast_mode.autocast": "cuda",
    "torch.cpu.amp.autocast": "cpu",
    "torch.cpu.amp.autocast_mode.autocast": "cpu",
}
GRAD_SCALER = {
    "torch.cuda.amp.GradScaler": "cuda",
    "torch.cuda.amp.grad_scaler.GradScaler": "cuda",
    "torch.cpu.amp.GradScaler": "cpu",
    "torch.cpu.amp.grad_scaler.GradScaler": "cpu",
}
_SDP_FLAGS = {  # sdp_kernel keyword -> SDPBackend member, in the order they are listed
    "enable_flash": "FLASH_ATTENTION",
    "enable_mem_efficient": "EFFICIENT_ATTENTION",
    "enable_cudnn": "CUDNN_ATTENTION",
    "enable_math": "MATH",
}
_AUTOCAST_PARAMS = ("enabled", "dtype", "cache_enabled")
_SCALER_PARAMS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled")


def is_model_like(expr: ast.AST) -> bool:
    """``model``, ``self.encoder``, ``Net()``, ``model.eval()``: an nn.Module, most likely.

    Example:
        >>> [is_model_like(ast.parse(s, mode="eval").body)
        ...  for s in ("self.encoder", "Net()", "x", "self.models['pose']", "ckpt['model']")]
        [True, True, False, True, False]
        >>> is_model_like(ast.parse("models.resnet18(weights=None).eval()", mode="eval").body)
        True
        >>> [is_model_like(ast.parse(f"{c}.from_pretrained(p)", mode="eval").body)
        ...  for c in ("AutoModelForSeq2SeqLM", "AutoTokenizer")]
        [True, False]
        >>> is_model_like(ast.parse("ControlLDM.load_from_checkpoint(p).to(d).eval()", mode="eval").body)
        True
        >>> [is_model_like(ast.parse(f"Lit.load_from_checkpoint(p).{a}", mode="eval").body)
        ...  for a in ("G_ema", "hparams")]
        [True, False]
    """
    name = dotted(expr)
    if name is not None:
        return bool(MODEL_NAME.search(name.rsplit(".", 1)[-1]))
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Call) and (
            expr.attr not in _NOT_SUBMODULES):  # (Lit.load_from_checkpoint(p).G_ema: a part of it)
        return is_model_like(expr.value)
    if isinstance(expr, ast.Subscript) and isinstance(constant(expr.slice), str):
        container = dotted(expr.value) or ""  # (self.models["encoder"]: a dict of modules)
        return bool(container) and bool(MODEL_NAME.search(container.rsplit(".", 1)[-1]))
    if isinstance(expr, ast.Call):
        if isinstance(expr.func, ast.Name) and expr.func.id[:1].isupper():
            return True  # Net(...)
        if _MODEL_ZOO.search(dotted(expr.func) or ""):  # torchvision.models.resnet50(...)
            return True
        if method_name(expr) in {"eval", "cuda", "cpu", "to", "float", "requires_grad_"}:
            return is_model_like(expr.func.value)
        if method_name(expr) == "load_from_checkpoint":  # (Lightning: Lit.load_from_checkpoint(p))
            return True
        if method_name(expr) == "from_pretrained":  # (Hugging Face: a model, unless a tokenizer's)
            return not _NOT_A_MODEL.search(dotted(expr.func.value) or "")  # type: ignore[attr-defined]
    return False


#: a model zoo's constructor: torchvision.models.detection.fasterrcnn_resnet50_fpn(...),
#: models.resnet18(...), timm.create_model(...)
_MODEL_ZOO = re.compile(r"(^|\.)models\.\w|(^|\.)create_model$")

#: attributes of a module that are no module (what ``Net().config`` reads)
_NOT_SUBMODULES = frozenset({"hparams", "config", "device", "dtype", "training", "weight", "bias",
                             "tokenizer", "generation_config", "name_or_path"})  # fmt: skip

#: classes whose ``from_pretrained`` loads no model
_NOT_A_MODEL = re.compile(r"Tokenizer|Processor|Config|FeatureExtractor|Scheduler")


def sdpa_text(call: ast.Call) -> str | None:
    """``sdpa_kernel([...])`` replacing an ``sdp_kernel(...)`` call, or None when its
    arguments are not all literal ``enable_*=True/False`` keywords.

    Example:
        >>> sdpa_text(ast.parse("sdp_kernel(enable_math=False)", mode="eval").body)
        'sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])'
    """
    enabled = dict.fromkeys(_SDP_FLAGS, True)
    if call.args:
        return None
    for kw in call.keywords:
        if kw.arg not in _SDP_FLAGS:
            return None
        if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool)):
            return None
        enabled[kw.arg] = kw.value.value
    members = [f"SDPBackend.{_SDP_FLAGS[k]}" for k, on in enabled.items() if on]
    return f"sdpa_kernel([{', '.join(members)}])" if members else None


def keyword_call_text(
    call: ast.Call, params: Sequence[str], new_func: str, device: str, lines: list[str]
) -> str | None:
    """``new_func("device", p0=a0, ..., k=v)`` from a call whose positional arguments are
    ``params`` in order; None when they cannot be mapped.

    Example:
        >>> src = "GradScaler(2.0, enabled=False)"
        >>> call = ast.parse(src, mode="eval").body
        >>> keyword_call_text(call, ("init_scale", "enabled"), "torch.amp.GradScaler", "cuda", [src])
        'torch.amp.GradScaler("cuda", init_scale=2.0, enabled=False)'
    """
    args = [f'"{device}"']
    if len(call.args) > len(params):
        return None
    for name, arg in zip(params, call.args):
        if isinstance(arg, ast.Starred):
            return None
        args.append(f"{name}={segment(lines, arg)}")
    for kw in call.keywords:
        if kw.arg is None or kw.arg not in params:
            return None
        args.append(segment(lines, kw) or f"{kw.arg}={ast.unparse(kw.value)}")
    return f"{new_func}({', '.join(args)})"


def _replace_call(text: str, adds: Sequence[tuple], removes: Sequence[tuple]):
    """A LibCST rewrite swapping a call for ``text`` and updating imports."""

    def rewrite(node, tools):
        import libcst as cst

        for add in adds:
            tools.add_import(*add)
        for remove in removes:
            tools.remove_unused_import(*remove)
        return cst.parse_expression(text)

    return rewrite


#: the rules of this family: code, name, documentation (docs/lint-rules.md is generated).
RULES = (
    Rule(
        "TD501",
        "whole-model-half",
        "info",
        "whole model cast to float16 for inference: every op runs in float16, the softmax, "
        "norms and reductions autocast keeps in float32 too (overflow, NaN)",
        "bfloat16 weights where the device has it (model.to(torch.bfloat16): the same memory, "
        "float32's range), or fp32 weights under torch.autocast; keep .half() only with its "
        "outputs checked against float32",
        "model = model.half()",
        "model = model.to(torch.bfloat16)  # or fp32 weights under torch.autocast",
        seed="001",
    ),
    Rule(
        "TD502",
        "deprecated-sdp-kernel",
        "warning",
        "torch.backends.cuda.sdp_kernel is deprecated",
        "torch.nn.attention.sdpa_kernel([SDPBackend...]); --fix rewrites calls whose enable_* "
        "flags are literal True/False",
        "with torch.backends.cuda.sdp_kernel(enable_math=False):",
        "with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, "
        "SDPBackend.CUDNN_ATTENTION]):",
        autofix=True,
        runtime_cost=False,
        seed="004",
    ),
    Rule(
        "TD503",
        "deprecated-cuda-amp-autocast",
        "warning",
        "torch.cuda.amp.autocast / torch.cpu.amp.autocast are deprecated",
        "torch.amp.autocast('cuda', ...)",
        "with torch.cuda.amp.autocast(dtype=torch.bfloat16):",
        "with torch.amp.autocast('cuda', dtype=torch.bfloat16):",
        autofix=True,
        runtime_cost=False,
    ),
    Rule(
        "TD504",
        "deprecated-cuda-amp-gradscaler",
        "warning",
        "torch.cuda.amp.GradScaler / torch.cpu.amp.GradScaler are deprecated",
        "torch.amp.GradScaler('cuda', ...)",
        "scaler = torch.cuda.amp.GradScaler()",
        "scaler = torch.amp.GradScaler('cuda')",
        autofix=True,
        runtime_cost=False,
    ),
)


class PrecisionRules(RuleVisitor):
    """TD501 whole-model half; TD502-TD504 deprecated sdp_kernel / cuda.amp entry points.

    Example:
        >>> from torchdoctor.lint import lint_source
        >>> [f.code for f in lint_source("model = Net().half()\\n")]
        ['TD501']
    """

    RULES = RULES
    CODES = tuple(rule.code for rule in RULES)
    TRIGGERS = ((r"\.half\(|float16|sdp_kernel|\bamp\b|GradScaler|autocast",),)

    def _torch_name(self, func: ast.AST) -> str | None:
        """The alias ``func``'s root binds to torch (``T`` of ``T.cuda.amp.autocast``), else
        None (the fix then uses ``torch`` and adds ``import torch``)."""
        root = func
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and func is not root:
            if self.names.resolve(root.id) == {"torch"}:
                return root.id
        return None

    def visit_Call(self, node: ast.Call) -> None:
        names = self.callee(node)
        if names & SDP_KERNEL:
            text = sdpa_text(node)
            self.report(
                node,
                "TD502",
                "torch.backends.cuda.sdp_kernel is deprecated: use "
                "torch.nn.attention.sdpa_kernel([SDPBackend...])",
                fix=None
                if text is None
                else _replace_call(
                    text,
                    [("torch.nn.attention", "SDPBackend"), ("torch.nn.attention", "sdpa_kernel")],
                    [("torch.backends.cuda", "sdp_kernel")],
                ),
            )
        for table, code, params, attr in (
            (AUTOCAST, "TD503", _AUTOCAST_PARAMS, "autocast"),
            (GRAD_SCALER, "TD504", _SCALER_PARAMS, "GradScaler"),
        ):
            hit = names & table.keys()
            if not hit or names & SDP_KERNEL:
                continue
            device = table[min(hit)]  # (a set's order is the hash seed's: one of its own)
            torch_name = self._torch_name(node.func)
            text = keyword_call_text(
                node, params, f"{torch_name or 'torch'}.amp.{attr}", device, self.context.lines
            )
            adds = [] if torch_name else [("torch",)]
            if code == "TD503":
                msg = (
                    f"torch.{device}.amp.autocast is deprecated: use "
                    f"torch.amp.autocast({device!r}, ...)"
                )
            else:
                msg = (
                    f"torch.{device}.amp.GradScaler is deprecated: use "
                    f"torch.amp.GradScaler({device!r}, ...)"
                )
            self.report(
                node,
                code,
                msg,
                fix=None
                if text is None
                else _replace_call(text, adds, [(f"torch.{device}.amp", attr)]),
            )
            break
        self._check_half(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        """``autocast = torch.cuda.amp.autocast`` (RAFT's try/except for torch < 1.6): every
        ``with autocast(enabled=...)`` calls the deprecated class through the name."""
        hit = self.names.qualify(node.value) & (AUTOCAST.keys() | GRAD_SCALER.keys()) if (
            isinstance(node.value, ast.Attribute)) else set()  # fmt: skip
        if hit:
            name = next(iter(sorted(hit)))
            device, attr = (AUTOCAST | GRAD_SCALER)[name], name.rsplit(".", 1)[-1]
            self.report(
                node.value,
                "TD503" if name in AUTOCAST else "TD504",
                f"`{self.code_of(node.value)}` is deprecated and every call through this name "
                f"uses it: bind functools.partial(torch.amp.{attr}, {device!r}) instead",
            )

    def _then_evaluated(self, node: ast.Call) -> bool:
        """``rm.half().eval()``: the cast's result is switched to eval mode, which only a
        module has (a tensor has no ``.eval()``), whatever the receiver's name."""
        outer = self.parent(node)
        return (
            isinstance(outer, ast.Attribute)
            and outer.attr in {"eval", "train"}
            and isinstance(self.parent(outer), ast.Call)
        )

    def _check_half(self, node: ast.Call) -> None:
        name = method_name(node)
        if name == "half" and not node.args and not node.keywords:
            pass
        elif name == "to" and any(
            self.qualified_names(a) & HALF
            for a in [*node.args, *(k.value for k in node.keywords if k.arg == "dtype")]
        ):
            pass
        else:
            return
        receiver = node.func.value
        scope = self.enclosing_scope(node)
        if not is_model_like(receiver) and not (  # (rr = CrossEncoder().to(device).eval())
            isinstance(receiver, ast.Name)
            and any(is_model_like(v) for v in self.assigned_values(scope, receiver.id))
        ) and not self._then_evaluated(node) and not returns_eval_model(receiver, self.context):
            return  # (G = load_generator(ckpt).half(): a loader returning an eval-mode model)
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)) and self.is_training_body(
            scope
        ):
            return
        self.report(
            node,
            "TD501",
            f"`{self.code_of(node)}` casts the whole model to float16: every op runs in float16, "
            "the softmax, norms and reductions too (overflow, NaN); bfloat16 weights keep the "
            "memory saving with float32's range (model.to(torch.bfloat16), where the device has "
            "it), torch.autocast keeps those ops in float32; keep .half() only with its outputs "
            "checked against float32",
        )

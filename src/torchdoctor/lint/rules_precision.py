"""TD5xx: precision and engine: whole-model fp16 casts and deprecated AMP/SDPA entry points."""

from __future__ import annotations

import libcst as cst

from torchdoctor.lint.visitor import MODEL_NAME, RuleVisitor, code_of, dotted, method_name

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


def is_model_like(expr: cst.BaseExpression) -> bool:
    """``model``, ``self.encoder``, ``Net()``, ``model.eval()``: an nn.Module, most likely."""
    name = dotted(expr)
    if name is not None:
        return bool(MODEL_NAME.search(name.rsplit(".", 1)[-1]))
    if isinstance(expr, cst.Call):
        if isinstance(expr.func, cst.Name) and expr.func.value[:1].isupper():
            return True  # Net(...)
        if method_name(expr) in {"eval", "cuda", "to", "float", "requires_grad_"}:
            return is_model_like(expr.func.value)
    return False


class PrecisionRules(RuleVisitor):
    """TD501 whole-model half; TD502-TD504 deprecated sdp_kernel / cuda.amp entry points."""

    CODES = ("TD501", "TD502", "TD503", "TD504")
    TRIGGERS = ((r"\.half\(|float16|sdp_kernel|\bamp\b|GradScaler|autocast",),)

    def visit_Call(self, node: cst.Call) -> None:
        from torchdoctor.lint.fixes import autocast_call, grad_scaler_call, sdpa_call

        names = self.callee(node)
        if names & SDP_KERNEL:
            self.report(
                node,
                "TD502",
                "torch.backends.cuda.sdp_kernel is deprecated: use "
                "torch.nn.attention.sdpa_kernel([SDPBackend...])",
                fixable=sdpa_call(node) is not None,
            )
        elif names & AUTOCAST.keys():
            device = AUTOCAST[next(iter(names & AUTOCAST.keys()))]
            self.report(
                node,
                "TD503",
                f"torch.{device}.amp.autocast is deprecated: use torch.amp.autocast({device!r}, ...)",
                fixable=autocast_call(node, device, "torch") is not None,
            )
        elif names & GRAD_SCALER.keys():
            device = GRAD_SCALER[next(iter(names & GRAD_SCALER.keys()))]
            self.report(
                node,
                "TD504",
                f"torch.{device}.amp.GradScaler is deprecated: use "
                f"torch.amp.GradScaler({device!r}, ...)",
                fixable=grad_scaler_call(node, device, "torch") is not None,
            )
        self._check_half(node)

    def _check_half(self, node: cst.Call) -> None:
        name = method_name(node)
        if name == "half" and not node.args:
            pass
        elif name == "to" and any(
            self.qualified_names(a.value) & HALF
            for a in node.args
            if a.keyword is None or a.keyword.value == "dtype"
        ):
            pass
        else:
            return
        receiver = node.func.value
        if not is_model_like(receiver):
            return
        scope = self.enclosing_scope(node)
        if isinstance(scope, cst.FunctionDef) and self.is_training_body(scope):
            return
        self.report(
            node,
            "TD501",
            f"`{code_of(node)}` casts the whole model to float16: keep fp32 weights and run "
            "inference under torch.autocast (bfloat16 where supported), which keeps "
            "precision-sensitive ops (softmax, norms, reductions) in fp32",
        )

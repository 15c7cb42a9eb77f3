"""Advice on nanoGPT-shaped sessions: a module's forward line run once per call of many layers
is no per-element loop, and attention that already calls SDPA is not told to use it."""

from __future__ import annotations

from torchdoctor.analyze.advice.dominant import dominant_module
from torchdoctor.analyze.advice.hot_lines_cures import is_per_element_loop
from torchdoctor.analyze.advice.hot_lines_data import measured_lines


def _stat(value: float) -> dict:
    return {"median": value, "mean": value}


def _node(path: str, type_name: str, ms: float, calls: float, children=()) -> dict:
    return {"kind": "module", "path": path, "name": path.rsplit(".", 1)[-1], "type": type_name,
            "total_ms": _stat(ms), "forward_ms": _stat(ms / 2), "backward_ms": _stat(ms / 2),
            "calls_per_step": calls, "children": list(children)}  # fmt: skip


def _line(owner: str, line: int, code: str, ms: float, calls: float, ops=()) -> dict:
    return {"file": "/repo/model.py", "line": line, "location": f"model.py:{line}",
            "function": "forward", "code": code, "owner": owner, "owner_kind": "module",
            "forward_ms": _stat(ms / 2), "backward_ms": _stat(ms / 2), "total_ms": _stat(ms),
            "calls_per_step": calls, "torch_calls_per_step": calls,
            "top_ops": [{"op": op, "forward_ms": ms / 2, "backward_ms": ms / 2,
                         "calls_per_step": calls} for op in ops]}  # fmt: skip


def _session() -> dict:
    norms = [_node(f"h.{i}.ln_1", "LayerNorm", 1.0, 4) for i in range(5)]
    attn = _node("h.1.attn", "CausalSelfAttention", 14.0, 4)
    tree = {"kind": "root", "path": "", "total_ms": _stat(20.0), "children": [*norms, attn]}
    lines = [_line(f"h.{i}.ln_1", 27, "return F.layer_norm(x, ...)", 1.0, 4) for i in range(5)]
    lines.append(_line("h.1.attn", 64, "y = F.scaled_dot_product_attention(q, k, v)", 5.0, 4,
                       ops=("torch._C._nn.scaled_dot_product_attention",)))  # fmt: skip
    return {"step_ms": _stat(20.0), "tree": tree, "hot_lines": {"steps": 5, "lines": lines}}


def test_a_module_forward_line_run_once_per_call_is_no_loop():
    rows = {r["line"]: r for r in measured_lines(_session())}
    layer_norm = rows[27]
    assert layer_norm["calls_per_step"] == 20 and layer_norm["invocations_per_step"] == 20
    assert not is_per_element_loop(layer_norm)
    # the same line run 20x per call of its module would be one
    assert is_per_element_loop({**layer_norm, "invocations_per_step": 1.0})


def test_attention_already_calling_sdpa_gets_no_sdpa_advice():
    titles = [a.title for a in dominant_module(_session())]
    assert titles and not any("SDPA" in t for t in titles), titles
    without_lines = {**_session(), "hot_lines": None}
    assert any("SDPA" in a.title for a in dominant_module(without_lines))


def test_attention_in_library_code_seen_calling_sdpa_gets_no_sdpa_advice():
    """A Hugging Face model's attention is library code (no hot lines inside it); the sync
    audit saw scaled_dot_product_attention called, so SDPA is known to be in use."""
    session = {**_session(), "hot_lines": None}
    session["environment"] = {"knobs": {"fused_attention": True}}
    titles = [a.title for a in dominant_module(session)]
    assert titles and not any("SDPA" in t for t in titles), titles


def test_the_audit_sees_a_fused_attention_call_and_the_session_records_it():
    import torch
    import torch.nn.functional as F

    import torchdoctor

    class Attention(torch.nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q, is_causal=True)

    model, q = Attention(), torch.randn(1, 2, 4, 8)
    with torchdoctor.Profiler(model, warmup=0) as with_sdpa:
        for _ in range(2):
            model(q)
            with_sdpa.step()
    assert with_sdpa.session["environment"]["knobs"]["fused_attention"] is True
    plain = torch.nn.Linear(8, 8)
    with torchdoctor.Profiler(plain, warmup=0) as without:
        for _ in range(2):
            plain(q)
            without.step()
    assert without.session["environment"]["knobs"]["fused_attention"] is None


def test_multihead_attention_is_fused_only_without_weights():
    """The audit's mode sees F.multi_head_attention_forward, not the SDPA inside it: fused
    when it is called with need_weights=False (nn.TransformerEncoderLayer does)."""
    import torch

    import torchdoctor

    def knob(module, *args, **kwargs):
        with torchdoctor.Profiler(module, warmup=0) as prof:
            for _ in range(2):
                module(*args, **kwargs)
                prof.step()
        return prof.session["environment"]["knobs"]["fused_attention"]

    x = torch.randn(2, 5, 16)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)
    assert knob(layer, x) is True
    assert knob(attention, x, x, x) is None  # need_weights=True: the weights are computed
    assert knob(attention, x, x, x, need_weights=False) is True

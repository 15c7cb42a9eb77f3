"""Rule loop-invariant in a training forward: the repeated calls' backward goes with them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchdoctor
from torchdoctor.analyze.advice.recompute import loop_invariant


def _record(**extra):
    return {"path": "attn", "calls_per_step": 25.0, "identical_input_calls": 20.0,
            "time_per_call_ms": 0.088, "source": None, "call_site": {
                "file": "/w/attn.py", "line": 72, "code": "score = self.attn(enc_output)"},
            **extra}  # fmt: skip


def test_calls_alike_under_autograd_count_their_backward():
    """nlp-tutorial's Seq2Seq(Attention): attn(enc_outputs[j]) again at each of 5 decoder
    steps, 20 of 25 calls repeated; stated 1.13 ms a step (forward alone) where computing it
    once measured 3-4.6 ms a step (its backward, as long as its forward, went too)."""
    session = {"recomputation": [_record(backward_per_call_ms=0.087)],
               "step_ms": {"median": 35.0}}  # fmt: skip
    (item,) = loop_invariant(session)
    assert item.estimated_saving_ms == pytest.approx(20 * (0.088 + 0.087))
    assert "backward 0.087 ms: the repeated calls' backward goes with them" in item.evidence[1]
    session["recomputation"] = [_record()]  # (no backward: an inference loop's, near miss)
    assert loop_invariant(session)[0].estimated_saving_ms == pytest.approx(20 * 0.088)


def test_a_measured_repeating_line_keeps_its_own_forward_time():
    """pytorch/examples' GAT: one training call, then evaluations under no_grad from another
    line: the repeated call is an evaluation's, without backward."""
    rec = _record(backward_per_call_ms=5.0, repeat_site={"file": "/w/attn.py", "line": 90})
    line = {"file": "/w/attn.py", "line": 90, "modules": ["attn"], "ms_per_step": 2.0,
            "calls_per_step": 20.0}  # fmt: skip
    (item,) = loop_invariant({"recomputation": [rec], "call_lines": [line],
                              "step_ms": {"median": 35.0}})  # fmt: skip
    assert item.estimated_saving_ms == pytest.approx(20 * 0.1)


def test_the_profiler_records_the_backward_per_call_of_a_recomputed_module():
    torch.manual_seed(0)
    proj, memory = nn.Linear(8, 8), torch.randn(4, 8)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = proj

        def forward(self, x):
            for _ in range(3):  # the same memory projected again at each step
                x = x + self.proj(memory).sum(0)
            return x

    model = Decoder()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        model(torch.randn(8)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()

    s = torchdoctor.profile(step, model=model, steps=3, warmup=1, syncs=False)
    (rec,) = [r for r in s["recomputation"] if r["path"] == "proj"]
    assert rec["identical_input_calls"] == 2.0 and rec["backward_per_call_ms"] > 0.0

"""An ``nn.MultiheadAttention`` called with its default ``need_weights=True`` runs unfused: the
recorder reads its first call (shapes, masks, flags), and when the profiler stops it times the
call as made and with ``need_weights=False`` on a fresh module, leaving the user's random state,
module and gradients alone (DETR: the fused call measured slower on a CPU in training with
dropout, so no fixed speedup can be stated)."""

import torch
from torch import nn

import torchdoctor
from torchdoctor.collect.attention_probe import attention_call, probe_attention


class Encoder(nn.Module):
    """DETR's encoder layer in small: self-attention with a padding mask, weights unused."""

    def __init__(self, width=64, need_weights=None):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, 4, dropout=0.1)
        self.linear = nn.Linear(width, width)
        self.need_weights = need_weights

    def forward(self, src, mask):
        extra = {} if self.need_weights is None else {"need_weights": self.need_weights}
        out = self.self_attn(src, src, value=src, key_padding_mask=mask, **extra)[0]
        return self.linear(src + out)


def _run(model, steps=3):
    torch.manual_seed(0)
    src = torch.randn(48, 4, 64)
    mask = torch.zeros(4, 48, dtype=torch.bool)
    mask[1, 40:] = True
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    prof = torchdoctor.Profiler(model, detail="always", syncs=False, hot_lines=False).start()
    for _ in range(steps):
        opt.zero_grad()
        model(src, mask).square().mean().backward()
        opt.step()
        prof.step()
    return prof


def _attention_node(session):
    stack = [session["tree"]]
    while stack:
        node = stack.pop()
        if node.get("path") == "self_attn":
            return node
        stack.extend(node.get("children") or ())
    raise AssertionError("no self_attn node")


def test_an_unfused_attention_call_is_timed_both_ways_on_its_shapes():
    prof = _run(Encoder())
    node = _attention_node(prof.stop().to_dict())
    call = node["attention"]
    assert call["query"] == [48, 4, 64] and call["key_padding_mask"] == {
        "shape": [4, 48], "dtype": "bool"}  # fmt: skip
    assert call["need_weights"] is True and call["same"] == "qkv"
    assert call["training"] and call["grad"] and call["dropout"] == 0.1
    measured = call["measured"]
    assert measured["reps"] >= 3
    assert measured["as_called_ms"] > 0 and measured["fused_ms"] > 0


def test_a_call_that_runs_fused_already_is_not_probed():
    node = _attention_node(_run(Encoder(need_weights=False)).stop().to_dict())
    assert node["attention"]["need_weights"] is False
    assert "measured" not in node["attention"]


def test_the_probe_leaves_the_users_random_state_and_gradients_alone():
    model = Encoder()
    prof = _run(model)
    rng = torch.get_rng_state()
    grads = [p.grad.clone() for p in model.parameters()]
    weights = [p.detach().clone() for p in model.parameters()]
    session = prof.stop().to_dict()
    assert "fused_ms" in _attention_node(session)["attention"]["measured"]  # it did run
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(p.detach(), w) for p, w in zip(model.parameters(), weights))


def test_calls_of_one_configuration_share_a_measurement_within_the_budget():
    heavy, light = nn.MultiheadAttention(64, 4), nn.MultiheadAttention(16, 2)
    big, small = torch.randn(64, 4, 64), torch.randn(8, 2, 16)
    calls = {1: attention_call(heavy, (big, big, big), {}),
             2: attention_call(light, (small, small, small), {}),
             3: attention_call(light, (small, small, small), {})}  # fmt: skip
    probe_attention(calls, budget_s=5.0)
    assert calls[2]["measured"] is calls[3]["measured"] and calls[2]["measured"]["reps"] >= 3
    assert calls[1]["measured"] is not calls[2]["measured"]
    spent = {1: attention_call(heavy, (big, big, big), {})}
    probe_attention(spent, budget_s=0.0)  # (no time left: said so, nothing run)
    assert spent[1]["measured"] == {"not_measured": "the probe's time budget was spent"}


def test_no_probe_after_an_interrupted_run():
    prof = _run(Encoder(), steps=2)
    prof.state.interrupted = True
    node = _attention_node(prof.stop().to_dict())
    assert "measured" not in node["attention"]


def test_a_call_under_autocast_is_probed_under_it():
    mha = nn.MultiheadAttention(32, 2)
    x = torch.randn(16, 2, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        call = attention_call(mha, (x, x, x), {})
    assert call["autocast"] == "bfloat16" and call["dtype"] == "float32"
    probe_attention({1: call}, budget_s=5.0)
    assert call["measured"]["fused_ms"] > 0
    assert attention_call(mha, (x, x, x), {})["autocast"] is None

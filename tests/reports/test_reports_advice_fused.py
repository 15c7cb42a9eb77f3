"""A measured line holding a hand-written activation or attention (lint TD508 / TD507) gets the
fused kernel as its fix and a saving from the benchmarked speedup (suite 'fused')."""

from reports_sessions import slow_session

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.hot_lines_cures import (
    ACTIVATION_SPEEDUPS,
    FUSED_ACTIVATION,
    FUSED_ATTENTION,
)


def _session(line_ms):
    session = slow_session()
    rest = next(c for c in session["tree"]["children"] if c["kind"] == "self")
    rest["forward_ms"] = {"median": 80.0, "mean": 80.0}  # (the lines' time is the root's own)
    code = "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))"
    row = {
        "file": "/x/model.py", "line": 27, "location": "model.py:27", "function": "forward",
        "function_line": 26, "code": code, "owner": "", "owner_kind": "root",
        "forward_ms": {"median": line_ms, "mean": line_ms},
        "backward_ms": {"median": 0.0, "mean": 0.0},
        "total_ms": {"median": line_ms, "mean": line_ms}, "calls_per_step": 3.0,
        "torch_calls_per_step": 24.0,
        "top_ops": [{"op": "Tensor.mul", "forward_ms": line_ms / 2, "backward_ms": 0.0,
                     "calls_per_step": 12.0}],
    }  # fmt: skip
    session["hot_lines"] = {"steps": 5, "lines": [row]}
    session["lint"] = [{"code": "TD508", "path": "/x/model.py", "line": 27, "severity": "info",
                        "message": "hand-written tanh GELU"}]  # fmt: skip
    return session


def _advice_on(session, where):
    return [a for a in advise(session) if any(where in loc for loc in a.locations)]


def test_a_hot_line_with_a_hand_written_gelu_gets_the_fused_kernel_and_a_saving():
    (item,) = _advice_on(_session(line_ms=20.0), "/x/model.py")
    assert item.rule == "hot-line" and item.fix == FUSED_ACTIVATION.fix
    # the tanh GELU's own pair, not the span of every activation (softplus 1.11x at the low end)
    low, high = ACTIVATION_SPEEDUPS["tanh GELU"].low, ACTIVATION_SPEEDUPS["tanh GELU"].high
    assert low > FUSED_ACTIVATION.speedup.low
    assert abs(item.estimated_saving_ms - 20.0 * (1 - 1 / low)) < 1e-6
    assert abs(item.saving_range_ms[1] - 20.0 * (1 - 1 / high)) < 1e-6
    assert item.confidence == "high"
    assert any("tanh GELU 1.72x" in line for line in item.evidence)


def test_each_activation_gets_its_own_pair_and_an_unmeasured_one_the_span():
    silu = _session(line_ms=20.0)
    silu["lint"][0]["message"] = "hand-written SiLU (`x * torch.sigmoid(x)`): F.silu(x) ..."
    (item,) = _advice_on(silu, "/x/model.py")
    assert abs(item.estimated_saving_ms - 20.0 * (1 - 1 / ACTIVATION_SPEEDUPS["SiLU"].low)) < 1e-6
    log_sigmoid = _session(line_ms=20.0)
    log_sigmoid["lint"][0]["message"] = "hand-written log-sigmoid (`torch.log(torch.sigmoid(x))`)"
    (item,) = _advice_on(log_sigmoid, "/x/model.py")
    assert abs(item.estimated_saving_ms - 20.0 * (1 - 1 / FUSED_ACTIVATION.speedup.low)) < 1e-6


def test_a_measured_but_cool_attention_line_gets_the_sdpa_fix_and_its_saving():
    """Under the hot-line threshold (2% of the step), the lint finding on the measured line is
    the advice."""
    session = _session(line_ms=4.0)
    session["hot_lines"]["lines"][0]["code"] = "att = F.softmax(att, dim=-1)"
    session["lint"][0].update(code="TD507", message="hand-written attention")
    (item,) = _advice_on(session, "/x/model.py")
    assert item.rule == "lint" and item.fix == FUSED_ATTENTION.fix
    assert abs(item.estimated_saving_ms - 4.0 * (1 - 1 / FUSED_ATTENTION.speedup.low)) < 1e-6
    session["hot_lines"]["lines"][0]["total_ms"] = {"median": 1.0, "mean": 1.0}  # 0.5%
    (cold,) = _advice_on(session, "/x/model.py")  # a sliver of the step: no suspect
    assert cold.heat == 0.0 and "measured, under 1% of the step" in cold.evidence[0]
    assert any("benchmarked speedup" in line for line in item.evidence)


def test_hand_written_attention_is_one_cause_with_the_dominant_stacks_sdpa_remedy():
    """makemore: 'the block stack dominates: use SDPA' and 'TD507 on a measured line' were two
    advice for one remedy; they merge, the line's evidence joining the stack's advice."""
    from torchdoctor.analyze.advice.base import Advice
    from torchdoctor.analyze.advice.dominant import REMEDIES
    from torchdoctor.analyze.advice.lint_hot import lint_findings
    from torchdoctor.analyze.advice.merge import one_per_cause

    session = _session(line_ms=0.5)
    session["lint"][0].update(code="TD507", message="hand-written attention")
    (line,) = [a for a in lint_findings(session) if a.locations == ["/x/model.py:27"]]
    attention = next(r for r in REMEDIES if r.name == "attention")
    stack = Advice("dominant-module", f"h[0-3] dominates the step: {attention.title}",
                   evidence=["h[0-3] is 67% of the step"], cause=attention.cause)  # fmt: skip
    (merged,) = one_per_cause([stack, line])
    assert merged.title == stack.title
    assert any("model.py:27" in e for e in merged.evidence)


def test_attention_spread_over_lines_is_measured_over_all_of_them():
    """minGPT: q @ k^T, masked_fill, softmax and @ v on four lines; the finding (on the softmax)
    spans them (``pattern_lines``), and its time and saving are the four lines' sum, not the
    softmax line's quarter of it."""
    session = _session(line_ms=0.5)
    first = session["hot_lines"]["lines"][0]
    rows = []
    for line, ms in ((62, 2.0), (63, 1.5), (64, 2.5), (66, 1.5), (70, 9.0)):
        row = {**first, "line": line, "location": f"model.py:{line}", "code": "att = ..."}
        row.update(forward_ms={"median": ms, "mean": ms}, total_ms={"median": ms, "mean": ms})
        rows.append(row)
    session["hot_lines"]["lines"] = rows
    session["lint"][0].update(code="TD507", line=64, message="hand-written attention",
                              pattern_lines=[62, 66])  # fmt: skip
    (item,) = [a for a in _advice_on(session, "/x/model.py") if a.rule == "lint"]
    assert any("its lines (62, 63, 64, 66) take 7.5 ms" in e for e in item.evidence)
    expected = 7.5 * (1 - 1 / FUSED_ATTENTION.speedup.low)  # line 70 is not the attention's
    assert abs(item.estimated_saving_ms - expected) < 1e-6


def test_attention_run_with_dropout_in_training_on_a_cpu_gets_a_bound_not_a_saving():
    """minGPT's chargpt (attention dropout 0.1): TD507's SDPA cure was told 187 ms and measured
    15 ms; SDPA with dropout_p > 0 takes its unfused math path on a CPU (the module rule says
    so already); on CUDA the fused kernel runs dropout inside and the saving stands."""
    session = _session(line_ms=0.5)
    first = session["hot_lines"]["lines"][0]
    session["hot_lines"]["lines"] = [
        {**first, "line": n, "owner": "h.0.attn", "forward_ms": {"median": 3.0, "mean": 3.0},
         "total_ms": {"median": 3.0, "mean": 3.0}} for n in (62, 63, 64)]  # fmt: skip
    session["lint"][0].update(code="TD507", line=63, message="hand-written attention",
                              pattern_lines=[62, 64])  # fmt: skip
    drop = {"kind": "module", "type": "Dropout", "path": "h.0.attn.attn_dropout", "children": [],
            "forward_ms": {"mean": 0.1}, "backward_ms": {"mean": 0.1}, "total_ms": {"mean": 0.2}}
    attn = {"kind": "module", "type": "CausalSelfAttention", "path": "h.0.attn", "children": [drop],
            "forward_ms": {"mean": 9.0}, "backward_ms": {"mean": 0.1}, "total_ms": {"mean": 9.1}}
    session["tree"]["children"].append(attn)

    def lint_item(device):
        session["environment"] = {**(session.get("environment") or {}), "device": device}
        (item,) = [a for a in _advice_on(session, "/x/model.py") if a.rule == "lint"]
        return item

    cpu = lint_item("cpu")
    assert cpu.estimated_saving_ms is None and cpu.confidence == "low"
    assert abs(cpu.saving_range_ms[1] - 9.0 * (1 - 1 / FUSED_ATTENTION.speedup.high)) < 1e-6
    assert any("runs its unfused math path" in e for e in cpu.evidence)
    cuda = lint_item("cuda:0")
    assert abs(cuda.estimated_saving_ms - 9.0 * (1 - 1 / FUSED_ATTENTION.speedup.low)) < 1e-6
    drop["backward_ms"] = {"mean": 0.0}  # (in eval: dropout adds no graph node)
    assert lint_item("cpu").estimated_saving_ms is not None


def test_a_hot_line_of_dense_graph_attention_gets_the_edge_softmax_and_its_saving():
    """pytorch/examples GAT: its masked N x N softmax was the run's bottleneck (PyG's GATConv
    15-20x faster) and no advice named it; TD514 on the measured line gets the edge form."""
    from torchdoctor.analyze.advice.graph_cure import GRAPH_ATTENTION

    session = _session(line_ms=20.0)
    session["hot_lines"]["lines"][0]["code"] = "e = torch.where(adj_mat > 0, e, connectivity_mask)"
    session["lint"][0].update(code="TD514", message="`torch.where(adj_mat > 0, e, ...)` masks")
    (item,) = _advice_on(session, "/x/model.py")
    assert item.rule == "hot-line" and item.fix == GRAPH_ATTENTION.fix
    assert "torchdoctor.ops.edge_softmax" in item.fix
    # its gain depends on the graph's density (96-105x on Cora's size, 0.73x on small dense
    # graphs), which the run does not record: a bound, ranked by half of it
    assert item.estimated_saving_ms is None and item.bound_realized == 0.5
    assert abs(item.saving_range_ms[1] - 20.0 * (1 - 1 / GRAPH_ATTENTION.speedup.high)) < 1e-6
    assert any("0.73x on a batch of 64 small graphs" in e for e in item.evidence)


def test_a_pattern_over_several_hot_lines_is_one_advice_saving_on_all_of_them():
    """pytorch/examples GAT: TD514's pattern runs from the N x N fill (line 119) to the product
    with the features (line 128); its softmax and dropout lines were hot lines of their own
    ("one F.softmax per execution") and its saving counted the torch.where line alone (822 of
    8,053 ms)."""
    from torchdoctor.analyze.advice.graph_cure import GRAPH_ATTENTION

    session = _session(line_ms=10.0)
    base = session["hot_lines"]["lines"][0]
    rows = []
    for line, ms, op in ((119, 10.0, "torch.full_like"), (120, 10.0, "torch.where"),
                         (124, 15.0, "F.softmax"), (125, 20.0, "F.dropout")):  # fmt: skip
        rows.append({**base, "line": line, "location": f"model.py:{line}",
                     "code": f"line {line}", "calls_per_step": 1.0, "torch_calls_per_step": 1.0,
                     "forward_ms": {"median": ms, "mean": ms},
                     "total_ms": {"median": ms, "mean": ms},
                     "top_ops": [{"op": op, "forward_ms": ms, "backward_ms": 0.0,
                                  "calls_per_step": 1.0}]})  # fmt: skip
    session["hot_lines"]["lines"] = rows
    rest = next(c for c in session["tree"]["children"] if c["kind"] == "self")
    rest["forward_ms"] = {"median": 120.0, "mean": 120.0}
    session["lint"] = [{"code": "TD514", "path": "/x/model.py", "line": 120, "severity": "warning",
                        "message": "masks scores", "pattern_lines": [119, 128]}]  # fmt: skip
    found = _advice_on(session, "/x/model.py")
    assert len(found) == 1, [a.title for a in found]  # (the softmax and dropout lines joined)
    (item,) = found
    assert item.fix == GRAPH_ATTENTION.fix and "lines 119-125" in item.title
    assert abs(item.saving_range_ms[1] - 55.0 * (1 - 1 / GRAPH_ATTENTION.speedup.high)) < 1e-6
    assert {"/x/model.py:119", "/x/model.py:124", "/x/model.py:125"} <= set(item.locations)


def test_attention_without_a_mask_or_channels_first_gets_its_own_measured_speedup():
    """torchcfm's U-Net attention (channels first, no mask) was told 27.6 ms from the causal
    pair's 1.42x-1.97x; SDPA with the transposes its layout needs measured 0.88x there."""
    from torchdoctor.analyze.advice.base import SPEEDUPS

    session = _session(line_ms=20.0)
    session["hot_lines"]["lines"][0]["code"] = "w = torch.softmax(torch.einsum(...), dim=-1)"
    session["lint"][0].update(code="TD507", message="hand-written attention (no mask) ...")
    (unmasked,) = _advice_on(session, "/x/model.py")
    low = SPEEDUPS["sdpa_unmasked"].low
    assert abs(unmasked.estimated_saving_ms - 20.0 * (1 - 1 / low)) < 1e-6
    session["lint"][0]["message"] = "hand-written attention (no mask; channels first: ...)"
    (layout,) = _advice_on(session, "/x/model.py")
    assert layout.estimated_saving_ms is None and layout.confidence == "low"
    high = SPEEDUPS["sdpa_channels_first"].high
    assert abs(layout.saving_range_ms[1] - 20.0 * (1 - 1 / high)) < 1e-6
    assert any("no saving stated: measured 0.83x" in e for e in layout.evidence)


def test_a_dominant_stack_of_unmasked_attention_takes_the_unmasked_speedup_on_a_cpu():
    """A ViT-like stack (6 blocks, 128 tokens, no mask) was stated up to 188 ms from the causal
    1.97x; its attention measured 1.19x fused (fwd + bwd, 32x4x128x32): the stack's remedy reads
    its lines' TD507 ("no mask") and takes 1.15x-1.26x; a masked one keeps the wider span."""
    from torchdoctor.analyze.advice.base import SPEEDUPS
    from torchdoctor.analyze.advice.dominant_lines import line_facts

    session = _session(line_ms=20.0)
    session["hot_lines"]["lines"][0]["owner"] = "blocks.0.attn"
    session["lint"][0].update(code="TD507", message="hand-written attention (...); no mask: ...")
    facts = line_facts(session)
    assert facts.cpu_attention_speedup(["blocks"]) == "sdpa_unmasked"
    assert facts.cpu_attention_speedup(["head"]) == "sdpa_cpu"  # (not its lines)
    assert SPEEDUPS["sdpa_unmasked"].high < SPEEDUPS["sdpa_cpu"].high
    for message in ("hand-written attention (...)", "(no mask; channels first: ...)"):
        session["lint"][0]["message"] = message  # a mask, or a layout of its own
        assert line_facts(session).cpu_attention_speedup(["blocks"]) == "sdpa_cpu"

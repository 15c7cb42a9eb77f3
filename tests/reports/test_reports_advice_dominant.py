"""The dominant-module rule: the stack, attention and linear-algebra remedies, the caveat when
the profiler's hooks are a large share of the step, and recomputed modules left to their rule."""

from __future__ import annotations

import pytest
from reports_sessions import node, s, slow_session

from torchdoctor.analyze.advice import advise, amdahl_saving
from torchdoctor.analyze.advice.dominant import dominant_module


def test_dominant_finds_the_repeated_layer_stack_not_the_wrapper():
    (item,) = dominant_module(slow_session())
    assert "model.decoder.layers[0-5]" in item.title
    assert item.estimated_saving_ms == pytest.approx(amdahl_saving(200.0, 120 / 200, 1.2))


def test_dominant_module_carries_a_caveat_when_the_profiler_is_a_large_share():
    tree = {"kind": "root", "path": "", "total_ms": {"median": 10.0}, "children": [
        {"kind": "module", "path": "head", "name": "head", "type": "Linear",
         "total_ms": {"median": 8.0}, "children": []}]}  # fmt: skip
    session = {"step_ms": {"median": 10.0}, "tree": tree}
    (plain,) = dominant_module(session)
    # the hooks' share counts (30 calls x 100 us of a 10 ms step), not the audit's or lines'
    few = {"overhead_pct": 135.0, "calls_per_step": 6, "cost_us": 94.0}  # a 6-layer VAE
    session["config"] = {"profiler_overhead": few}
    (few_calls,) = dominant_module(session)
    few.update(calls_per_step=30, cost_us=100.0)
    (caveat,) = dominant_module(session)
    assert caveat.confidence == "low" and "~43% of the step" in caveat.evidence[1]
    assert not any("profiler" in line for line in plain.evidence + few_calls.evidence)


def test_a_large_measured_detail_cost_is_a_caveat_even_when_the_hooks_are_cheap():
    """A Hugging Face generate() step: 55 module calls (hooks ~16% of it) but 371 torch calls
    under the audit and the lines' timers: detailed 11 ms against 4.8 ms light (+152%)."""
    tree = {"kind": "root", "path": "", "total_ms": {"median": 11.0}, "children": [
        {"kind": "module", "path": "head", "name": "head", "type": "Linear",
         "total_ms": {"median": 8.0}, "children": []}]}  # fmt: skip
    estimate = {"overhead_pct": 152.0, "source": "measured", "overhead_ms": 6.2,
                "calls_per_step": 55, "cost_us": 32.4}  # fmt: skip
    session = {"step_ms": {"median": 11.0}, "tree": tree, "config": {"profiler_overhead": estimate}}
    (item,) = dominant_module(session)
    assert item.confidence == "low" and "costs 152% more than a light one" in item.evidence[1]
    estimate["overhead_pct"] = 30.0  # (a moderate cost: no caveat)
    (item,) = dominant_module(session)
    assert not any("light one" in e for e in item.evidence)


def test_two_dominant_sibling_layers_are_one_stack_advice():
    def layer(i):
        return {"kind": "module", "path": f"encoder.layers.{i}", "name": str(i),
                "type": "TransformerEncoderLayer", "total_ms": {"median": 4.0}, "children": []}  # fmt: skip

    tree = {"kind": "root", "path": "", "total_ms": {"median": 10.0}, "children": [
        {"kind": "module", "path": "encoder", "name": "encoder", "type": "Encoder",
         "total_ms": {"median": 8.5}, "children": [
             {"kind": "module", "path": "encoder.layers", "name": "layers", "type": "ModuleList",
              "total_ms": {"median": 8.0}, "children": [layer(0), layer(1)]}]}]}  # fmt: skip
    found = dominant_module({"step_ms": {"median": 10.0}, "tree": tree})
    assert len(found) == 1 and "encoder.layers[0-1]" in found[0].title
    assert any("2 identical TransformerEncoderLayer layers" in e for e in found[0].evidence)
    assert "train a model with fewer" in found[0].fix  # (a backward: a model in training)
    for layer_node in tree["children"][0]["children"][0]["children"]:
        layer_node["forward_ms"] = {"median": 4.0}  # (all of it forward: inference)
    (served,) = dominant_module({"step_ms": {"median": 10.0}, "tree": tree})
    assert "serve a smaller model" in served.fix and "train a model" not in served.fix


def test_numbered_layers_of_one_type_and_different_sizes_are_no_stack():
    """pytorch/examples super_resolution: conv1 .. conv4 are Conv2d of four shapes (1 -> 64
    5x5, 64 -> 64, 64 -> 32, 32 -> 9), saving nothing of their own (the ReLU between them
    does): no "4 identical Conv2d layers" to compile; the largest one is the diagnosis."""

    def conv(i, ms, params):
        return {"kind": "module", "path": f"conv{i}", "name": f"conv{i}", "type": "Conv2d",
                "total_ms": {"median": ms}, "activation_bytes": 0, "params": params,
                "children": []}  # fmt: skip

    convs = [conv(1, 10.0, 1664), conv(2, 43.0, 36928), conv(3, 25.0, 18464), conv(4, 9.0, 2601)]
    tree = {"kind": "root", "path": "", "total_ms": {"median": 100.0}, "children": [
        {"kind": "module", "path": "Net", "name": "Net", "type": "Net",
         "total_ms": {"median": 99.0}, "children": convs}]}  # fmt: skip
    session = {"step_ms": {"median": 100.0}, "tree": tree}
    (item,) = dominant_module(session)
    assert item.title.startswith("conv2 (Conv2d) dominates the step: it is one convolution")
    for c in convs:  # the same four with one parameter count: a stack of identical layers
        c["params"] = 36928
    (stack,) = dominant_module(session)
    assert "conv1..conv4" in stack.title and "compile the layer stack" in stack.title


def test_dominant_attention_module_gets_sdpa_remedy():
    attn = node("model.attn", 6.0, 0.0, type="MultiheadAttention")
    other = node("model.mlp", 2.0, 0.0, type="Linear")
    root = node(
        "", 8.0, 0.0, kind="root", children=[node("model", 8.0, 0.0, children=[attn, other])]
    )
    found = dominant_module({"step_ms": s(10.0), "tree": root})
    assert [a.title for a in found if "SDPA" in a.title]


def test_dominant_linalg_region_points_to_ops():
    region = node("whiten_covariance", 5.0, kind="region")
    root = node("", 6.0, kind="root", children=[region, node("head", 1.0, type="Linear")])
    (item,) = dominant_module({"step_ms": s(10.0), "tree": root})
    assert "torchdoctor.ops.whiten" in item.references  # whiten_covariance -> ops.whiten


def test_dominant_leaves_a_recomputed_module_to_the_loop_invariant_rule():
    encoder = node("encoder", 6.0, type="ConditionEncoder")
    decoder = node("decoder", 3.0, type="Decoder")
    root = node("", 10.0, kind="root", children=[encoder, decoder])
    session = {"step_ms": s(10.0), "tree": root}
    assert [a.title.split()[0] for a in dominant_module(session)] == ["encoder", "decoder"]
    session["recomputation"] = [
        {
            "path": "encoder",
            "calls_per_step": 10,
            "identical_input_calls": 9,
            "time_per_call_ms": 0.6,
        }
    ]
    assert [a.title.split()[0] for a in dominant_module(session)] == ["decoder"]


def test_a_dominant_lstm_is_one_native_kernel_not_a_compile_target():
    lstm = node("rnn", 6.0, 0.0, type="LSTM")
    root = node("", 8.0, kind="root", children=[node("net", 8.0, children=[lstm])])
    (item,) = dominant_module({"step_ms": s(10.0), "tree": root})
    assert "fused recurrent kernel" in item.title and "compile" not in item.title
    assert "pack_padded_sequence" in item.fix and item.estimated_saving_ms is None


def test_a_gru_called_per_time_step_is_left_to_the_rnn_per_step_advice():
    """char-rnn's nn.GRU, called 200 times a step with one character each, was told "pack padded
    batches, bucket long sequences" (dominant-module) above "pass the whole sequence in one call"
    (rnn-per-step), two items for one module."""
    gru = node("rnn", 6.0, 0.0, type="GRU", calls=200.0)
    root = node("", 8.0, kind="root", children=[node("net", 8.0, children=[gru])])
    session = {"step_ms": s(10.0), "tree": root}
    assert dominant_module(session) == []
    assert [a.rule for a in advise(session) if "rnn" in a.title][:1] == ["rnn-per-step"]


def test_a_hand_written_leaf_whose_lines_are_matmuls_gets_the_matmul_remedy():
    """pytorch/examples' GraphConv: ``torch.mm(x, self.kernel)`` is its time, not fusable ops."""
    conv = node("gc2", 6.0, 0.0, type="GraphConv")
    root = node("", 8.0, kind="root", children=[node("gcn", 8.0, children=[conv])])
    session = {"step_ms": s(10.0), "tree": root}
    (plain,) = dominant_module(session)
    assert plain.title.endswith("compile it to fuse its ops")  # nothing measured inside it
    line = {"file": "/x/main.py", "line": 58, "owner": "gc2", "total_ms": {"mean": 5.0},
            "top_ops": [{"op": "torch.mm", "forward_ms": 3.5, "backward_ms": 1.2}]}  # fmt: skip
    session["hot_lines"] = {"lines": [line]}
    (item,) = dominant_module(session)
    assert item.title.endswith("it is one matmul: make the matmul cheaper")
    line["top_ops"][0]["op"] = "Tensor.softmax"  # the same time in another op: still compile
    assert dominant_module(session)[0].title.endswith("compile it to fuse its ops")
    line["top_ops"][0]["op"] = "torch.mm[sparse_coo]"  # GCN's sparse features: the layout
    (sparse,) = dominant_module(session)
    assert sparse.title.endswith("change the sparse layout") and sparse.cause == "sparse-layout"
    assert "to_sparse_csr()" in sparse.fix and sparse.estimated_saving_ms is None


def test_two_stacked_lstm_cells_looped_over_time_get_the_sequence_remedy_not_compile():
    """pytorch/examples time_sequence_prediction: LSTMCell(1, 51) and LSTMCell(51, 51), each
    called once per time step; their saved activations are alike, so they form a "stack"."""
    def cell(name):
        return {**node(name, 19.0, 0.0, type="LSTMCell"), "calls_per_step": 2.2e4,
                "activation_bytes": 1.8e9}  # fmt: skip

    root = node("", 48.0, kind="root", children=[
        node("seq", 46.0, children=[cell("lstm1"), cell("lstm2")])])  # fmt: skip
    (item,) = dominant_module({"step_ms": s(48.0), "tree": root})
    assert "run the sequence with nn.LSTM" in item.title and "lstm1..lstm2" in item.title
    assert "num_layers=2" in item.fix


def _composite(leaf_type: str, other_type: str) -> dict:
    """A DCGAN-like discriminator: three leaf layers of ``leaf_type`` (67% of it) and small
    activations and norms between them, none of them 30% of the step on its own."""
    leaves = [node(f"D.main.{i}", 5.0, 5.0, type=leaf_type) for i in (0, 2, 4)]
    between = [node(f"D.main.{i}", 5.0, 0.0, type=other_type) for i in (1, 3)]
    main = node("D.main", 30.0, 15.0, type="Sequential", children=leaves + between)
    return node("", 30.0, 15.0, kind="root", children=[node("D", 30.0, 15.0, children=[main])])


def test_a_composite_made_of_convolutions_is_told_to_make_them_cheaper_not_to_compile():
    # (found on pytorch/examples' dcgan: "spread over its parts: compile it" for a net whose
    # time is three Conv2d kernels, which torch.compile does not fuse)
    (item,) = dominant_module({"step_ms": s(70.0), "tree": _composite("Conv2d", "BatchNorm2d")})
    assert "convolutions" in item.title and item.cause == "channels_last"
    assert "channels_last" in item.fix and "torch.compile does not fuse" in item.fix


def test_a_composite_made_of_linear_layers_is_told_to_make_the_matmuls_cheaper():
    found = dominant_module({"step_ms": s(70.0), "tree": _composite("Linear", "GELU")})
    (item,) = found
    assert "matrix multiplies" in item.title and item.cause == "bf16-autocast"
    assert item.estimated_saving_ms is None  # bf16 tensor cores: no stated saving on a CPU run
    assert "autocast('cpu'" not in item.fix  # (bf16 in hardware unknown)
    native = {"step_ms": s(70.0), "tree": _composite("Linear", "GELU"),
              "environment": {"device": "cpu", "bf16_native": True}}  # fmt: skip
    (item,) = dominant_module(native)  # (AVX512-BF16 / AMX: CPU autocast pays off)
    assert "torch.autocast('cpu', dtype=torch.bfloat16)" in item.fix
    assert 'device_type="cpu"' in item.code  # (the snippet follows the text: a CPU run)


def test_a_cpu_without_bf16_units_is_not_given_a_cuda_autocast_snippet():
    """WGAN-GP's MLP discriminator on an AVX2 CPU (clients round 17): "run them in bf16 under
    torch.autocast" with a `device_type="cuda"` snippet, where CPU autocast would emulate bf16."""
    session = {"step_ms": s(70.0), "tree": _composite("Linear", "GELU"),
               "environment": {"device": "cpu", "bf16_native": False}}  # fmt: skip
    (item,) = dominant_module(session)
    assert item.cause == "bf16-autocast" and item.code is None
    assert "no bfloat16 units" in item.fix and "slower" in item.fix
    cuda = {**session, "environment": {"device": "cuda:0", "bf16_native": False}}
    (item,) = dominant_module(cuda)  # (near miss: a GPU run keeps its snippet)
    assert 'device_type="cuda"' in item.code and "no bfloat16 units" not in item.fix


def test_a_composite_of_small_mixed_parts_is_still_told_to_compile():
    (item,) = dominant_module({"step_ms": s(70.0), "tree": _composite("LayerNorm", "GELU")})
    assert "spread over its parts: compile it" in item.title


def test_a_sequential_whose_own_row_is_its_parts_hooks_is_not_sent_to_regions():
    """cleanrl's DQN: a Q-network's nn.Sequential of Linear and ReLU, its (self) row 40% of it
    (the loop over its parts and their hooks' cost on 0.1 ms layers): 'profile inside it: wrap
    its sub-steps in torchdoctor.region' named nothing it could wrap."""
    parts = [node(f"q.network.{i}", 0.4, 0.05, type="Linear" if i % 2 == 0 else "ReLU")
             for i in range(5)]  # fmt: skip
    network = node("q.network", 3.0, 0.3, type="Sequential", children=parts)
    root = node("", 3.0, 0.3, kind="root", children=[node("q", 3.0, 0.3, children=[network])])
    (item,) = dominant_module({"step_ms": s(9.0), "tree": root})
    assert "spread over its parts: compile it" in item.title and "region" not in item.fix


def _compile_measured(accepted: bool, median: float) -> dict:
    return {"rows": [{"knob": "compile", "title": "torch.compile", "status": "measured",
                      "accepted": accepted, "drift": 0.0, "verdict": "faster" if accepted else
                      "slower", "speedup": {"median": median, "low": median - 0.05,
                                            "high": median + 0.05, "pairs": 3}}]}  # fmt: skip


def test_a_tune_that_measured_compile_replaces_the_stacks_stated_compile_saving():
    # the HF Trainer's GPT-2: "compile the layer stack" promised 16 ms; a tune measured compile
    from torchdoctor.analyze.advice import advise

    session = slow_session()
    (stated,) = dominant_module(session)
    assert stated.cause == "torch.compile" and stated.estimated_saving_ms
    session["tune"] = _compile_measured(False, 0.97)
    (item,) = [a for a in advise(session) if a.rule == "dominant-module"]
    assert item.estimated_saving_ms is None and item.confidence == "low"
    assert any("measured torch.compile" in e and "0.97x" in e for e in item.evidence)
    session["tune"] = _compile_measured(True, 1.25)
    merged = [a for a in advise(session) if a.cause == "torch.compile"]
    assert len(merged) == 1  # one entry: the measurement and the stack it is about
    (item,) = merged
    assert item.estimated_saving_ms == pytest.approx(200.0 * (1 - 1 / 1.25))  # measured, not stated
    also = " ".join(e for e in item.evidence if e.startswith("also found by"))
    assert {item.rule, *also.removeprefix("also found by: ").split(", ")} >= {
        "tuned-knob", "dominant-module"}


def test_the_sdpa_saving_of_a_block_stack_is_over_its_attention_core_only():
    """minGPT's chargpt: 'use fused attention (SDPA)' for a stack of 6 blocks took the SDPA
    speedup over the whole stack (98% of the step: 428-927 ms); the fused kernel replaces the
    attention core, not the MLPs, norms and projections (650 of 1,854 ms: 150-325 ms)."""
    from torchdoctor.analyze.advice.base import SPEEDUPS

    def block(i):
        attn = node(f"h.{i}.attn", 6.0, 4.0, type="CausalSelfAttention", children=[
            node(f"h.{i}.attn.c_attn", 1.5, 1.5, type="Linear"),
            node(f"h.{i}.attn.attn_dropout", 2.0, 0.0, type="Dropout")])  # fmt: skip
        return node(f"h.{i}", 12.0, 8.0, type="Block",
                    children=[attn, node(f"h.{i}.mlp", 6.0, 4.0, type="MLP")])  # fmt: skip

    root = node("", 40.0, 0.0, kind="root", children=[block(0), block(1)])
    root["total_ms"] = s(42.0)
    session = {"step_ms": s(42.0), "tree": root}
    (item,) = dominant_module(session)
    assert "SDPA" in item.title
    core = 2 * (10.0 - 3.0)  # each attention less its projection
    speedup = SPEEDUPS["sdpa_cpu"]  # (no device: a CPU run, where SDPA measured 1.15-1.97x)
    assert item.estimated_saving_ms == pytest.approx(amdahl_saving(42.0, core / 42.0, speedup.low))
    assert any("is 14 ms, 33% of the step" in e for e in item.evidence)
    # its lines' TD507 says "no mask": the unmasked span (a ViT was told the causal 1.97x)
    session["hot_lines"] = {"steps": 3, "lines": [
        {"file": "/m/model.py", "line": 9, "owner": "h.0.attn", "total_ms": s(3.0), "top_ops": []}]}
    session["lint"] = [{"code": "TD507", "path": "/m/model.py", "line": 9, "message": "...; no mask"}]
    (item,) = dominant_module(session)
    top = amdahl_saving(42.0, core / 42.0, SPEEDUPS["sdpa_unmasked"].high)
    assert item.saving_range_ms[1] == pytest.approx(top)


def test_a_stack_named_like_attention_counts_only_its_attention_modules():
    """x-transformers' ``attn_layers`` (type Decoder) is the whole layer stack: its SDPA part
    was 300 ms (all of it, feed-forwards included) because the stack's own name matched and its
    descendants were skipped. Its attention is the Attention modules less their projections."""
    from torchdoctor.analyze.advice.base import SPEEDUPS

    def layer(i, kind):
        if kind == "ff":
            return node(f"attn_layers.layers.{i}.1", 8.0, 6.0, type="FeedForward")
        return node(f"attn_layers.layers.{i}.1", 12.0, 8.0, type="Attention", children=[
            node(f"attn_layers.layers.{i}.1.to_q", 2.0, 2.0, type="Linear"),
            node(f"attn_layers.layers.{i}.1.attend", 7.0, 5.0, type="Attend", children=[
                node(f"attn_layers.layers.{i}.1.attend.attn_dropout", 0.1, 0.0, type="Dropout")
            ])])  # fmt: skip

    stack = node("attn_layers", 40.0, 28.0, type="Decoder",
                 children=[layer(0, "attn"), layer(1, "ff"), layer(2, "attn"), layer(3, "ff")])
    root = node("", 40.0, 28.0, kind="root", children=[stack])
    root["total_ms"] = s(100.0)  # (the encoder's stack would be the rest)
    (item,) = dominant_module({"step_ms": s(100.0), "tree": root})
    assert "SDPA" in item.title
    core = 2 * (20.0 - 4.0)  # each Attention less its to_q; the FeedForwards are not attention
    assert any(f"is {core:.0f} ms" in e for e in item.evidence), item.evidence
    speedup = SPEEDUPS["sdpa_cpu"]  # (no device: a CPU run, where SDPA measured 1.15-1.97x)
    assert item.estimated_saving_ms == pytest.approx(
        amdahl_saving(100.0, core / 100.0, speedup.low)
    )


def test_a_multiply_line_inside_hand_written_attention_joins_the_sdpa_advice():
    """x-transformers: `sim = einsum('b h i d, b h j d -> b h i j', q, k)` in its Attend module
    was a second entry, 'its time is the matrix multiply: bf16 ...', beside 'use fused attention
    (SDPA)' for the stack it is in: the multiply is the attention SDPA replaces."""
    from torchdoctor.analyze.advice import advise

    attn = node("layers.0.attn", 30.0, 20.0, type="Attention", children=[
        node("layers.0.attn.to_q", 5.0, 5.0, type="Linear"),
        node("layers.0.attn.attend", 14.0, 10.0, type="Attend")])  # fmt: skip
    stack = node("layers.0", 36.0, 24.0, type="Block",
                 children=[attn, node("layers.0.ff", 6.0, 4.0, type="FeedForward")])
    root = node("", 36.0, 24.0, kind="root", children=[stack])
    root["total_ms"] = s(100.0)
    row = {"file": "/x/attend.py", "line": 535, "location": "attend.py:535",
           "owner": "layers.0.attn.attend", "function": "forward",
           "code": "sim = einsum('b h i d, b h j d -> b h i j', q, k)",
           "total_ms": s(20.0), "forward_ms": s(14.0), "backward_ms": s(6.0),
           "calls_per_step": 1, "torch_calls_per_step": 1,
           "top_ops": [{"op": "torch.einsum", "forward_ms": 14.0, "backward_ms": 5.5,
                        "calls_per_step": 1}]}  # fmt: skip
    session = {"step_ms": s(100.0), "tree": root, "hot_lines": {"lines": [row]}}
    titles = [a.title for a in advise(session)]
    about = [t for t in titles if "SDPA" in t or "attend.py:535" in t]
    assert len(about) == 1 and "SDPA" in about[0], titles


def test_cells_of_two_layers_are_one_advice_and_float64_comes_first():
    """time_sequence_prediction as run: lstm2 33% and lstm1 21% of the step, unlike enough not
    to form a stack, got two items; in float64 (seq.double()) nn.LSTM is no faster on a CPU."""
    from torchdoctor.analyze.advice import advise

    def cell(name, ms, act):
        return {**node(name, ms, 0.0, type="LSTMCell"), "calls_per_step": 2.2e4,
                "activation_bytes": act}  # fmt: skip

    root = node("", 48.0, kind="root", children=[
        node("seq", 46.0, children=[cell("lstm1", 10.0, 3e8), cell("lstm2", 16.0, 1.8e9)])])
    session = {"step_ms": s(48.0), "tree": root, "phases": {"forward": s(20.0),
               "backward": s(26.0)}, "environment": {"device": "cpu", "optimizers": [
               {"type": "LBFGS", "dtype": "float32", "numel": 30_000}]}}  # fmt: skip
    cells = [a for a in advise(session) if "nn.LSTM" in a.title]
    assert len(cells) == 1  # (one nn.LSTM(num_layers=2), not one item per layer)
    session["environment"]["optimizers"][0]["dtype"] = "float64"
    ranked = advise(session)
    assert ranked[0].rule == "float64-training" and ranked[0].estimated_saving_ms > 0
    assert not [a for a in ranked if "nn.LSTM" in a.title]  # (merged into float64's)
    assert any("no faster than a loop of cells" in e for e in ranked[0].evidence)


def test_numbered_parts_of_one_type_are_named_as_their_group():
    """dlrm's model: eight EmbeddingBag tables emb_l.0-7 at 8.6% of the step together; the
    advice quoted the largest one, 'emb_l.5 2%'."""
    from torchdoctor.analyze.advice.dominant import _parts_text

    tables = [{"kind": "module", "path": f"emb_l.{i}", "name": str(i), "type": "EmbeddingBag",
               "total_ms": {"mean": 1.8}, "children": []} for i in range(8)]  # fmt: skip
    top = {"kind": "module", "path": "top_l", "name": "top_l", "type": "Sequential",
           "total_ms": {"mean": 39.0}, "children": []}  # fmt: skip
    text = _parts_text({"children": [top, *tables]}, step=170.0)
    assert text == "top_l 23%, emb_l[0-7] 8% (8 x ~1%) of the step"


def test_blocks_whose_stochastic_depth_is_identity_in_the_first_are_one_stack():
    """facebookresearch/dino's ViT: stochastic depth rises from 0, so blocks.0 holds
    nn.Identity() where blocks 1-11 hold DropPath. The tree read blocks[0-11], the advice
    "blocks[1-11] ... 11 identical Block layers"."""
    def block(i):
        drop = "Identity" if i == 0 else "DropPath"
        return node(f"backbone.blocks.{i}", 5.0, 10.0, type="Block", children=[
            node(f"backbone.blocks.{i}.attn", 2.0, 4.0, type="Attention"),
            node(f"backbone.blocks.{i}.drop_path", 0.1, 0.1, type=drop),
            node(f"backbone.blocks.{i}.mlp", 2.5, 5.0, type="Mlp")])  # fmt: skip

    tree = node("", 62.0, 122.0, kind="root", children=[
        node("backbone", 61.0, 121.0, type="VisionTransformer",
             children=[block(i) for i in range(12)])])  # fmt: skip
    (item,) = dominant_module({"step_ms": {"median": 184.0}, "tree": tree})
    assert "backbone.blocks[0-11]" in item.title
    assert any("12 identical Block layers" in e for e in item.evidence)

def test_the_channels_last_remedy_says_a_view_of_a_conv_output_must_become_a_reshape():
    """ignite's MNIST example (clients round 21): moved to channels_last as advised, its
    `x = x.view(-1, 320)` raised; with .reshape the step was 1.4-1.5x faster."""
    from torchdoctor.analyze.advice.knobs import engine_knobs

    (item,) = dominant_module({"step_ms": s(70.0), "tree": _composite("Conv2d", "BatchNorm2d")})
    assert "use .reshape() or .flatten(1) there" in item.fix
    session = slow_session()
    session["tree"]["children"][0]["children"].append(node("model.conv1", 30.0, 60.0,
                                                           type="Conv2d"))  # fmt: skip
    (layout,) = [a for a in engine_knobs(session) if "channels_last" in a.title]
    assert "use .reshape() or .flatten(1) there" in layout.fix
    (linear,) = dominant_module({"step_ms": s(70.0), "tree": _composite("Linear", "GELU")})
    assert ".reshape()" not in linear.fix  # (no convolution: no layout to change)


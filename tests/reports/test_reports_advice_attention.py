"""The dominant-module advice's attention remedy: a measured saving when the profiler timed the
attention call with ``need_weights=False`` on its shapes; no fused-attention advice when that
measured no faster (DETR on a CPU, in training with dropout); bf16 named only where the device
computes it natively."""

from __future__ import annotations

import pytest
from reports_sessions import node

from torchdoctor.analyze.advice.dominant import dominant_module


def _session(measured=None, bf16_native=None, device="cpu"):
    attn = node("encoder.self_attn", 50.0, 30.0, type="MultiheadAttention")
    if measured is not None:
        attn["attention"] = {
            "query": [625, 2, 256], "key": [625, 2, 256], "batch_first": False,
            "key_padding_mask": {"shape": [2, 625], "dtype": "bool"}, "attn_mask": None,
            "dropout": 0.1, "training": True, "measured": measured,
        }  # fmt: skip
    layer = node("encoder", 60.0, 40.0, type="EncoderLayer",
                 children=[attn, node("encoder.linear1", 5.0, 5.0, type="Linear")])  # fmt: skip
    root = node("", 60.0, 40.0, kind="root", children=[layer])
    return {
        "step_ms": {"median": 100.0}, "tree": root,
        "environment": {"device": device, "bf16_native": bf16_native},
    }  # fmt: skip


def test_a_measured_faster_fused_call_gives_the_measured_saving():
    session = _session({"as_called_ms": 20.0, "fused_ms": 10.0, "reps": 5})
    (item,) = dominant_module(session)
    assert "pass need_weights=False to its nn.MultiheadAttention calls" in item.title
    assert "measured 2.00x on their shapes" in item.title
    # the attention module's 80 ms in the step, half of it saved: exact, no stated range
    assert item.estimated_saving_ms == pytest.approx(40.0)
    assert item.saving_range_ms == [pytest.approx(40.0), pytest.approx(40.0)]
    assert any("need_weights=False measured 20 ms -> 10 ms a call" in e for e in item.evidence)
    assert "dropout 0.1 in training" in " ".join(item.evidence)
    assert "need_weights=False" in item.code


def test_a_fused_call_measured_slower_is_not_advised():
    session = _session({"as_called_ms": 20.0, "fused_ms": 33.0, "reps": 5})
    (item,) = dominant_module(session)
    assert "attention" not in item.title and "need_weights" not in item.title
    text = " ".join(item.evidence)
    assert "0.61x" in text and "not told to run fused" in text
    assert "SDPA runs its unfused math path" in text


def test_unmeasured_attention_keeps_the_stated_remedy_and_names_bf16_only_where_native():
    (emulated,) = dominant_module(_session(bf16_native=False))
    assert emulated.title.endswith("use fused attention (SDPA)")
    assert "bfloat16" not in emulated.fix and emulated.estimated_saving_ms > 0
    (native,) = dominant_module(_session(bf16_native=True))
    assert native.title.endswith("use fused attention (SDPA) and bf16")
    assert "bfloat16" in native.fix
    (gpu,) = dominant_module(_session(device="cuda:0 NVIDIA H200"))  # (unknown on CUDA: has it)
    assert "and bf16" in gpu.title
    unmeasured = _session({"not_measured": "the probe's time budget was spent"}, False)
    (item,) = dominant_module(unmeasured)
    assert item.title.endswith("use fused attention (SDPA)")


def test_only_the_calls_measured_faster_are_told_and_counted():
    """DETR without dropout: the encoder's self-attention 1.25x faster fused, the decoder's
    cross-attention no faster: the advice names the first, saves on it alone."""
    def attention(path, slow, fast):
        part = node(path, 15.0, 10.0, type="MultiheadAttention")
        part["attention"] = {"query": [625, 2, 256], "key": [625, 2, 256], "batch_first": False,
                             "measured": {"as_called_ms": slow, "fused_ms": fast, "reps": 5}}
        return part

    layer = node("layer", 35.0, 25.0, type="DecoderLayer", children=[
        attention("layer.self_attn", 20.0, 16.0), attention("layer.cross_attn", 10.0, 11.0),
        node("layer.linear1", 5.0, 5.0, type="Linear")])  # fmt: skip
    root = node("", 60.0, 40.0, kind="root", children=[layer])
    (item,) = dominant_module({"step_ms": {"median": 100.0}, "tree": root})
    assert "the nn.MultiheadAttention calls of layer.self_attn (fused SDPA" in item.title
    assert "measured 1.25x on their shapes" in item.title
    assert item.estimated_saving_ms == pytest.approx(25.0 * 0.2)  # (not less the cross's loss)
    assert any("layer.cross_attn" in e and "not faster, leave it" in e for e in item.evidence)


def test_attention_called_with_need_weights_false_is_not_told_to_use_the_fused_kernel():
    """Lightning's nn.Transformer demo: its layers call MultiheadAttention with
    need_weights=False, so the fused kernel runs already; "use fused attention (SDPA)" was the
    top advice, worth nothing."""
    session = _session()
    attn = session["tree"]["children"][0]["children"][0]
    attn["attention"] = {"query": [64, 8, 256], "key": [64, 8, 256], "need_weights": False}
    (item,) = dominant_module(session)
    assert "fused attention" not in item.title and "need_weights" not in item.title
    attn["attention"]["need_weights"] = True  # (called for its weights: the remedy stands)
    (weighted,) = dominant_module(session)
    assert "use fused attention (SDPA)" in weighted.title


def _gpt(device, dropout_backward=1.0):
    """Karpathy's ng-video-lecture gpt.py: blocks of per-head hand-written attention, each with
    a Dropout on its attention weights (a backward: it ran in training)."""

    def block(i):
        head = node(f"blocks.{i}.sa.heads.0", 8.0, 6.0, type="Head", children=[
            node(f"blocks.{i}.sa.heads.0.key", 1.0, 1.0, type="Linear"),
            node(f"blocks.{i}.sa.heads.0.dropout", 1.0, dropout_backward, type="Dropout")])
        sa = node(f"blocks.{i}.sa", 9.0, 7.0, type="MultiHeadAttention", children=[head])
        ffwd = node(f"blocks.{i}.ffwd", 3.0, 2.0, type="FeedForward")
        return node(f"blocks.{i}", 12.0, 9.0, type="Block", children=[sa, ffwd])

    model = node("", 50.0, 40.0, type="GPT", children=[block(i) for i in range(4)])
    root = node("", 55.0, 45.0, kind="root", children=[model])
    return {"step_ms": {"median": 100.0}, "tree": root, "environment": {"device": device}}


def test_hand_written_attention_with_dropout_in_training_on_a_cpu_states_no_saving():
    """ng-video-lecture's gpt.py (dropout 0.2 on the attention weights): stated 20.1 ms for
    SDPA; measured 1-4 ms, SDPA taking its unfused math path on a CPU with dropout."""
    (cpu,) = dominant_module(_gpt("cpu"))
    assert "fused attention" in cpu.title
    assert cpu.estimated_saving_ms is None and cpu.confidence == "low"
    assert cpu.saving_range_ms[0] == 0.0 < cpu.saving_range_ms[1]
    assert any("unfused math path" in e for e in cpu.evidence)
    (gpu,) = dominant_module(_gpt("cuda:0 NVIDIA H200"))  # (flash kernels take dropout)
    assert gpu.estimated_saving_ms > 0
    (evaluation,) = dominant_module(_gpt("cpu", dropout_backward=0.0))  # (no dropout ran)
    assert evaluation.estimated_saving_ms > 0


def test_an_rnn_decoder_with_attention_is_not_told_to_use_fused_attention():
    """The seq2seq tutorial's AttnDecoderRNN: attention weights from an ``attn`` Linear over
    its input, its time in its GRU, embedding and output layer; no softmax(QK^T)V for SDPA."""
    parts = [node("decoder.embedding", 1.0, 10.0, type="Embedding"),
             node("decoder.attn", 1.0, 1.0, type="Linear"),
             node("decoder.attn_combine", 1.0, 2.0, type="Linear"),
             node("decoder.gru", 5.0, 13.0, type="GRU"),
             node("decoder.out", 4.0, 15.0, type="Linear")]  # fmt: skip
    decoder = node("decoder", 25.0, 42.0, type="AttnDecoderRNN", children=parts)
    root = node("", 45.0, 77.0, kind="root", children=[decoder])
    session = {"step_ms": {"median": 134.0}, "tree": root,
               "environment": {"device": "cpu", "bf16_native": True}}  # fmt: skip
    (item,) = [a for a in dominant_module(session) if "decoder" in a.title]
    assert "attention" not in item.title.lower() and "SDPA" not in item.fix, item.title


def test_the_snippet_rewrites_hand_written_attention_and_keeps_need_weights_for_torchs():
    """vit-pytorch's ViT (its Attention: matmul, softmax, dropout, matmul) was shown
    `attn(q, k, v, need_weights=False)`, an nn.MultiheadAttention call it does not make; a
    user class named MultiHeadAttention (ng-video-lecture's heads) is no torch module either."""
    (hand,) = dominant_module(_gpt("cuda:0 NVIDIA H200"))
    assert "scaled_dot_product_attention(q, k, v" in hand.code
    assert "need_weights" not in hand.code
    (torchs,) = dominant_module(_session())  # (nn.MultiheadAttention, not measured: near miss)
    assert "need_weights=False" in torchs.code
    assert "scaled_dot_product_attention" not in torchs.code

"""One advice per cause; knobs by module type; advice that fits a dominant leaf; numbers."""

from __future__ import annotations

import re

import pytest
from reports_sessions import TRAIN, library_session, node, s, slow_session

from torchdoctor.analyze.advice import RULES, advise
from torchdoctor.analyze.advice.base import Advice
from torchdoctor.analyze.advice.dominant import OPS_FOR, REMEDIES, dominant_module
from torchdoctor.analyze.advice.knobs import engine_knobs
from torchdoctor.analyze.advice.lint_groups import NEGLIGIBLE_NOTE
from torchdoctor.analyze.advice.lint_hot import lint_findings
from torchdoctor.analyze.advice.merge import one_per_cause
from torchdoctor.render.html import render_html
from torchdoctor.render.markdown import render_markdown
from torchdoctor.reports import with_advice

_PLACE = re.compile(r"([\w.-]+\.py):(\d+)")


def _named_lines(item: Advice) -> set[tuple[str, str]]:
    text = " ".join([item.title, *item.evidence])
    named = set(_PLACE.findall(text))
    named |= {
        (loc.rsplit(":", 1)[0].split("/")[-1], loc.rsplit(":", 1)[1]) for loc in item.locations
    }
    return named


def _lint(code: str, line: int, message: str = "m") -> dict:
    return {"code": code, "severity": "warning", "message": message, "path": TRAIN, "line": line}


def test_no_two_advice_entries_name_the_same_line():
    session = library_session()
    session["lint"] = [
        *session["lint"],
        _lint("TD302", 72, "remap via dict"),
        _lint("TD302", 72, "remap via sorted(set())"),
        _lint("TD201", 120, "item in loop"),
    ]
    found = advise(session)
    seen: dict[tuple[str, str], str] = {}
    for item in found:
        for place in _named_lines(item):
            assert place not in seen, f"{place} named by {seen[place]!r} and {item.title!r}"
            seen[place] = item.title
    assert ("train.py", "72") in seen and ("train.py", "88") in seen


def test_two_findings_on_one_line_are_one_advice():
    session = slow_session()
    session["lint"] = [_lint("TD302", 44, "via dict"), _lint("TD302", 44, "via set")]
    titles = [a.title for a in lint_findings(session)]
    assert len(titles) == 1  # cold: one group per code
    session["syncs"][0]["line"] = 44  # now a sync line: both findings are hot
    merged = advise(session)
    assert sum(1 for a in merged if ("train.py", "44") in _named_lines(a)) == 1


def test_a_sync_line_and_its_lint_finding_are_one_advice():
    session = slow_session()
    session["lint"] = [_lint("TD201", 88, ".item() in a loop")]
    found = advise(session)
    (item,) = [a for a in found if ("train.py", "88") in _named_lines(a)]
    assert "TD201" in item.references
    assert any("loss.item()" in e for e in item.evidence)


def test_merge_keeps_the_strongest_title_all_evidence_and_one_fix():
    strong = Advice("dominant-module", "stack dominates", fix="compile it", evidence=["a"],
                    estimated_saving_ms=10.0, cause="torch.compile")  # fmt: skip
    weak = Advice("engine-knobs", "torch.compile the model", fix="compile", evidence=["b"],
                  estimated_saving_ms=4.0, cause="torch.compile", generic=True)  # fmt: skip
    (merged,) = one_per_cause([strong, weak])
    assert (merged.title, merged.fix, merged.estimated_saving_ms) == (
        "stack dominates",
        "compile it",
        10.0,
    )
    assert merged.evidence[:2] == ["a", "b"] and not merged.generic
    assert strong.evidence == ["a"]  # the inputs are not modified


def test_a_lines_advice_keeps_its_own_saving_when_the_whole_model_knob_joins_it():
    """mnist: `x = F.relu(x)` (4.4 ms) "fuse with torch.compile" merged with "torch.compile the
    model" and stated 5.9-21.6 ms under the line's title; the line keeps its own saving and the
    whole model's is stated beside it."""
    line = Advice("hot-line", "train.py:14 takes 10% of the step (4.4 ms): fuse it",
                  fix="compile it", locations=["/w/train.py:14"], estimated_saving_ms=1.2,
                  saving_range_ms=[1.2, 2.0], cause="torch.compile")  # fmt: skip
    model = Advice("engine-knobs", "torch.compile the model", fix="compile", evidence=["b"],
                   estimated_saving_ms=5.9, saving_range_ms=[5.9, 21.6],
                   cause="torch.compile", generic=True)  # fmt: skip
    (merged,) = one_per_cause([line, model])
    assert merged.title.startswith("train.py:14") and merged.estimated_saving_ms == 1.2
    assert merged.saving_range_ms == [1.2, 2.0]
    assert any("whole model (torch.compile the model): 5.9 ms to 21.6 ms" in e
               for e in merged.evidence)  # fmt: skip


def test_a_bundle_hands_over_the_lines_a_stronger_advice_explains():
    strong = Advice("cpu-work", "move matching", evidence=["t.py:7 .cpu()"], locations=["t.py:7"])
    bundle = Advice("host-syncs", "keep scalars", evidence=["2 syncs", "t.py:7 x", "t.py:9 y"],
                    locations=["t.py:7", "t.py:9"], code="a  # t.py:7\nb  # t.py:9")  # fmt: skip
    first, second = one_per_cause([strong, bundle])
    assert first.locations == ["t.py:7"] and "t.py:7 x" in first.evidence
    assert second.locations == ["t.py:9"] and second.code == "b  # t.py:9"
    assert not any("t.py:7" in e for e in second.evidence)


def _tree(*children):
    return node("", 60.0, 40.0, kind="root", children=list(children))


def _session(tree, device="cpu"):
    return {
        "step_ms": s(100.0),
        "phases": {"forward": s(60.0), "backward": s(40.0)},
        "environment": {"device": device},
        "tree": tree,
    }


def test_channels_last_only_with_2d_or_3d_convolutions():
    gpt2 = _tree(
        node("h.0.attn.c_attn", 10.0, 10.0, type="Conv1D"),
        node("h.0.mlp.c_fc", 10.0, 10.0, type="Conv1D"),
        node("conv", 3.0, 2.0, type="Conv1d"),
    )
    assert not [a for a in engine_knobs(_session(gpt2, "cuda:0")) if "channels_last" in a.title]
    convnet = _tree(node("stem", 20.0, 10.0, type="Conv2d"))
    assert [a for a in engine_knobs(_session(convnet)) if "channels_last" in a.title]


def test_channels_last_saving_is_over_the_convolutions_not_the_whole_step():
    """A detector whose conv backbone is small and whose transformer is most of the step:
    channels_last changes only the convolutions (and batch norms)."""
    small = _tree(
        node("backbone.0", 3.0, 2.0, type="Conv2d"),
        node("decoder", 50.0, 40.0, type="TransformerDecoder"),
    )
    assert not [a for a in engine_knobs(_session(small)) if "channels_last" in a.title]
    big = _tree(
        node("stem", 20.0, 10.0, type="Conv2d"),
        node("bn", 5.0, 5.0, type="BatchNorm2d"),
        node("head", 35.0, 25.0, type="Linear"),
    )
    (item,) = [a for a in engine_knobs(_session(big)) if "channels_last" in a.title]
    assert "the convolutions and batch norms are 40 ms (40% of the step)" in item.evidence[0]
    assert item.saving_range_ms[1] < 0.4 * 100.0  # at most the conv part, never the step
    no_norms = _tree(node("stem", 20.0, 10.0, type="Conv2d"), node("head", 35.0, 25.0))
    (item,) = [a for a in engine_knobs(_session(no_norms)) if "channels_last" in a.title]
    assert "the convolutions are 30 ms" in item.evidence[0]  # (no batch norm to name)


def test_a_conv_block_of_the_model_is_counted_once_as_its_conv_and_norm():
    """YOLO's own ``Conv`` module (conv + batch norm + activation) matched the conv pattern
    too: its time and its children's were both counted (1,630 ms, 111% of a 1,470 ms step)."""
    block = node("model.0", 30.0, 30.0, type="Conv", children=[
        node("model.0.conv", 15.0, 15.0, type="Conv2d"),
        node("model.0.bn", 5.0, 5.0, type="BatchNorm2d"),
        node("model.0.act", 5.0, 5.0, type="SiLU")])  # fmt: skip
    (item,) = [a for a in engine_knobs(_session(_tree(block))) if "channels_last" in a.title]
    assert "the convolutions and batch norms are 40 ms (40% of the step)" in item.evidence[0]


def test_a_dominant_composite_explained_by_its_parts_is_not_told_to_profile_inside():
    """nanoGPT's GPT with 2 blocks: the tree shows inside it already."""
    gpt = node("GPT", 40.0, 30.0, type="GPT", children=[
        node("GPT.h.0", 15.0, 12.0, type="Block"), node("GPT.h.1", 15.0, 12.0, type="Block")])  # fmt: skip
    (item,) = dominant_module(_session(_tree(gpt)))
    assert item.title == "GPT dominates the step: its time is spread over its parts: compile it"
    assert "(GPT.h[0-1] 54% (2 x ~27%) of the step)" in item.fix and "region" not in item.fix
    opaque = node("GPT", 40.0, 30.0, type="GPT", children=[node("GPT.h.0", 5.0, 5.0)])
    (item,) = dominant_module(_session(_tree(opaque)))
    assert "torchdoctor.region" in item.fix  # mostly (self): look inside with regions


def test_two_identical_layers_of_which_one_crosses_the_threshold_are_one_stack():
    """word_language_model's generate.py: layers.0 at 33% of the step, layers.1 at 29%: the
    stack is the cause (as when both cross), not its first layer."""
    layers = [node(f"encoder.layers.{i}", fwd, bwd, type="EncoderLayer", children=[
                  node(f"encoder.layers.{i}.linear1", fwd / 2, bwd / 2, type="Linear")])
              for i, (fwd, bwd) in enumerate([(20.0, 13.0), (18.0, 11.0)])]  # fmt: skip
    encoder = node("encoder", 40.0, 25.0, type="Encoder", children=layers)
    (item,) = dominant_module(_session(_tree(encoder)))
    assert item.title.startswith("encoder.layers[0-1] dominates the step: compile the layer stack")


def test_two_leaf_layers_of_one_type_are_no_stack_of_identical_layers():
    """pytorch/examples mnist: conv1 (1 -> 32 channels) and conv2 (32 -> 64, 35% of the step):
    conv2 is one convolution, not the first of a "stack to compile or shorten"."""
    convs = [node("conv1", 4.0, 4.0, type="Conv2d"), node("conv2", 15.0, 20.0, type="Conv2d")]
    (item,) = dominant_module(_session(_tree(node("Net", 12.0, 16.0, type="Net", children=convs))))
    assert "layer stack" not in item.title and "convolution" in item.title


def test_a_dominant_leaf_linear_gets_matmul_remedies_not_profile_inside():
    for kind in ("Linear", "Conv1D"):
        tree = _tree(node("decoder", 30.0, 40.0, type=kind))
        (item,) = dominant_module(_session(tree))
        assert "profile inside" not in item.title and "matmul" in item.title
        assert "bf16" in item.fix and "multiples of 64" in item.fix
        assert item.estimated_saving_ms is None and item.heat > 0  # no stated CPU speedup
        (on_gpu,) = dominant_module(_session(tree, "cuda:0 H200"))
        assert on_gpu.estimated_saving_ms > 0


def test_dominant_embedding_leaf_and_composite_get_their_own_remedies():
    (emb,) = dominant_module(_session(_tree(node("wte", 10.0, 60.0, type="Embedding"))))
    assert "sparse" in emb.fix
    inner = node("body.a", 5.0, 5.0, type="ReLU")
    body = node("body", 30.0, 40.0, type="Block", children=[inner])
    (composite,) = dominant_module(_session(_tree(body)))
    assert "profile inside" in composite.title


def test_a_compiled_region_is_not_told_to_compile():
    """The OptimizedModule that torch.compile(module) returns runs as one graph: no row below it,
    and compiling it again is no advice."""
    compiled = node("OptimizedModule", 30.0, 40.0, type="OptimizedModule")
    (item,) = dominant_module(_session(_tree(compiled)))
    assert "compiled already" in item.title and "without torch.compile" in item.fix
    assert item.estimated_saving_ms is None


def test_dominant_module_is_one_table():
    assert [r.name for r in REMEDIES][-1] == "composite"  # the catch-all comes last
    for pattern, _ops in OPS_FOR:  # every ops pattern makes a node "linear algebra"
        name = pattern.pattern.split("|")[0].strip("\\b")
        tree = _tree(node(name, 30.0, 40.0, kind="region"))
        (item,) = dominant_module(_session(tree))
        assert "torchdoctor.ops" in item.title, name


def test_lint_is_a_rule_and_ranking_reads_no_rule_names():
    assert lint_findings in RULES
    import torchdoctor.analyze.advice as advice_package

    assert not hasattr(advice_package, "GENERIC_RULES")
    knob = next(a for a in advise(slow_session()) if a.rule == "engine-knobs")
    assert knob.generic


def test_numbers_have_three_significant_digits_in_every_renderer():
    session = slow_session()
    session["syncs"][0]["per_step"] = 6.357142857142857
    session["syncs"][1]["per_step"] = 0.17857142857142858
    session["tree"]["children"][0]["calls_per_step"] = 1.2857142857142858
    data = with_advice(session)
    # the HTML's visible text: its embedded session JSON (data for the page's script) is not
    visible = re.sub(r"<script.*?</script>", "", render_html(data), flags=re.S)
    texts = [render_markdown(data), visible]
    texts.append(" ".join(" ".join([a["title"], *a["evidence"]]) for a in data["advice"]))
    for text in texts:
        assert "6.35714" not in text and "0.178571" not in text and "1.28571" not in text
    assert "6.36" in texts[1] and "0.179" in texts[1]


def test_a_cold_lint_finding_joining_measured_advice_is_not_called_cold_there():
    # nanoGPT's sample.py: TD604 on `self(idx_cond)` (a module call: no hot line of its own)
    # joins the measured decode-without-cache advice; "not on a line the profile shows hot"
    # would contradict the measurement it now sits under
    measured = Advice("decode-without-cache", "Cache keys and values", heat=0.2,
                      evidence=["step time = 0.7 ms + 0.004 ms per token"], cause="kv-cache")  # fmt: skip
    cold = lint_findings({"lint": [{"code": "TD604", "message": "no KV cache", "path": "m.py",
                                    "line": 316, "replacement": None}]})  # fmt: skip
    assert cold[0].heat == 0 and "not on a line the profile shows hot" in cold[0].evidence[0]
    (item,) = one_per_cause([measured, *cold])
    assert not any("not on a line the profile shows hot" in e for e in item.evidence)
    assert "m.py:316: the linter found the same cause (TD604)" in item.evidence
    (alone,) = one_per_cause(cold)  # on its own it stays cold
    assert "not on a line the profile shows hot" in alone.evidence[0]


def test_a_convolution_with_a_slow_backward_is_named_without_a_stated_saving():
    """fast_neural_style's deconv3 (32 -> 3 channels, 9x9): backward 8x its forward on a CPU
    in NCHW. The advice names it; a map smaller than its kernel (padding) is not this case."""
    slow = node("net.deconv3", 10.0, 80.0, type="Conv2d")
    padded = {**node("net.layer4", 10.0, 90.0, type="Conv2d"), "conv": {"padding_share": 0.89}}
    normal = node("net.conv1", 10.0, 20.0, type="Conv2d")
    session = _session(_tree(slow, padded, normal))
    (item,) = [a for a in engine_knobs(session) if "channels_last" in a.title]
    named = [e for e in item.evidence if "slow path" in e]
    assert named == [
        "net.deconv3: backward 80 ms, 8.0x its forward (about 2x is usual): its backward kernel "
        "takes a slow path, which the memory format can change (measure it)"
    ]
    usual = node("net.deconv3", 30.0, 60.0, type="Conv2d")  # the same time, backward 2x
    (plain,) = [a for a in engine_knobs(_session(_tree(usual, padded, normal)))
                if "channels_last" in a.title]  # fmt: skip
    assert not [e for e in plain.evidence if "slow path" in e]
    assert plain.estimated_saving_ms == item.estimated_saving_ms  # (no saving of its own)


def test_a_lint_finding_on_a_negligible_hot_line_joining_a_between_steps_line():
    """`model.load_state_dict(torch.load("ckpt.pt"))` in an inference loop: 45% of the step
    between steps (sampled), while its few torch calls measured under 1% as a hot line; the
    TD605 finding's "measured, under 1% of the step" contradicted the advice it joined."""
    measured = Advice("between-steps", "infer.py:14 takes 45% of the step", heat=0.45,
                      locations=["infer.py:14"], evidence=["4.02 ms per step"])  # fmt: skip
    lint = Advice("lint", "TD605: loads the same model", heat=0.0, locations=["infer.py:14"],
                  evidence=[f"infer.py:14: {NEGLIGIBLE_NOTE}"], references=["TD605"])  # fmt: skip
    (item,) = one_per_cause([measured, lint])
    assert not any(NEGLIGIBLE_NOTE in e for e in item.evidence)
    assert "infer.py:14: the linter found the same cause (TD605)" in item.evidence


def test_a_lines_cure_leads_the_layers_backward_heavy_entries_it_explains():
    """mamba.py's scan: 'Backward of layers.0.mixer is 9x its forward' (an assumed saving) and
    the line's 'unbind the tensor once' (a measured one) are one advice, told by the cure; the
    layers' assumed savings are the range's top."""
    from torchdoctor.analyze.advice.backward import RATIO_NOTE
    from torchdoctor.analyze.advice.merge import one_per_cause

    line = "/m/mamba.py:318"
    heavy = [Advice("backward-heavy", f"Backward of layers.{i}.mixer is 9x its forward",
                    evidence=[f"layers.{i}.mixer: forward", RATIO_NOTE], fix="Detach ...",
                    estimated_saving_ms=ms, saving_range_ms=[ms, ms], locations=[line])
             for i, ms in ((0, 267.0), (1, 146.0))]  # fmt: skip
    cure = Advice("hot-line", "mamba.py:318 ...: unbind the tensor once before the loop",
                  fix="Take the slices once before the loop", estimated_saving_ms=170.0,
                  saving_range_ms=[170.0, 170.0], confidence="high", locations=[line])
    composite = Advice("dominant-module", "layers.0.mixer dominates the step: start at its "
                       "heaviest line, mamba.py:318, and compile it", fix="compile it",
                       estimated_saving_ms=61.0, cause="torch.compile", locations=["mamba.py:318"])
    knob = Advice("engine-knobs", "torch.compile the model", cause="torch.compile",
                  estimated_saving_ms=60.0)
    (item, other) = one_per_cause([heavy[0], cure, heavy[1], composite, knob])
    assert item.title.endswith("unbind the tensor once before the loop")
    assert item.fix.startswith("Take the slices") and item.confidence == "high"
    assert item.estimated_saving_ms == 170.0 and item.saving_range_ms == [170.0, 413.0]
    assert RATIO_NOTE not in item.evidence
    assert other.title == "torch.compile the model"  # the knob stays its own advice


def test_a_composite_merged_into_a_loop_is_no_cure_of_the_loop():
    from torchdoctor.analyze.advice.hot_lines_cures import PER_ELEMENT_LOOP
    from torchdoctor.analyze.advice.merge import one_per_cause

    loop = Advice("hot-line", "t.py:9 takes 40% of the step: a per-element Python loop",
                  fix=PER_ELEMENT_LOOP.fix, estimated_saving_ms=30.0, locations=["/p/t.py:9"])
    composite = Advice("dominant-module", "cell dominates the step: start at its heaviest "
                       "line, t.py:9, and compile it", fix="The hot lines show where ...",
                       estimated_saving_ms=5.0, cause="torch.compile", locations=["t.py:9"])
    (item,) = one_per_cause([loop, composite])
    assert item.fix == PER_ELEMENT_LOOP.fix and item.estimated_saving_ms == 30.0


def test_a_recomputed_module_and_the_lint_finding_on_the_loop_line_calling_it_are_one_advice():
    """A greedy decoder re-running `model.encode(src)` at every token: the profiler sees the
    encoder recomputed (loop-invariant), the linter TD601 on the loop's line that calls it
    (its model calls measured under the line). One advice, the line to move shown third."""
    record = {"path": "encoder", "calls_per_step": 1.0, "identical_input_calls": 1.0,
              "time_per_call_ms": 6.0, "call_site": {"file": "/w/model.py", "line": 13}}
    row = {"file": "/w/decode.py", "line": 24, "function": "greedy_decode",
           "location": "decode.py:24", "ms_per_step": 6.2, "modules": ["encoder", "embed"]}
    finding = {"code": "TD601", "severity": "warning", "path": "/w/decode.py", "line": 24,
               "message": "`model.encode(src)` gets the same arguments in every decoding step"}
    session = {"step_ms": {"mean": 10.0}, "tree": {"path": "", "children": []},
               "recomputation": [record], "call_lines": [row], "lint": [finding]}  # fmt: skip
    merged = [a for a in advise(session) if "encoder" in a.title or "TD601" in a.title]
    assert len(merged) == 1, [a.title for a in merged]
    (item,) = merged
    assert item.rule == "loop-invariant" and item.estimated_saving_ms == 6.0
    assert item.evidence[2].startswith("TD601") and "decode.py:24" in item.evidence[2]
    assert str(item.locations[0]).endswith("decode.py:24")


def test_modules_recomputed_from_one_line_are_one_advice():
    """`cond = self.obs_encoder(self.obs_proj(obs))` at every denoising step: both modules are
    recomputed, and hoisting the one line caches both: one advice, not two."""
    site = {"file": "/w/policy.py", "line": 14, "code": "cond = self.obs_encoder(...)"}
    records = [{"path": path, "calls_per_step": 1.0, "identical_input_calls": 1.0,
                "time_per_call_ms": ms, "call_site": site,
                "source": {"file": f"/torch/nn/{path}.py", "line": 100}}  # (each its own)
               for path, ms in (("obs_encoder", 3.0), ("obs_proj", 0.2))]  # fmt: skip
    session = {"step_ms": {"mean": 4.0}, "tree": {"path": "", "children": []},
               "recomputation": records}  # fmt: skip
    invariant = [a for a in advise(session) if a.rule == "loop-invariant"]
    assert [a.title.split(" once")[0] for a in invariant] == ["Compute obs_encoder"]
    assert any("obs_proj" in e for e in invariant[0].evidence)


def test_a_model_called_in_tiny_pieces_is_not_told_to_compile():
    """An RL policy called on one observation per environment step: compiled, its 36 us
    forward took 87 us (the review); the generic compile knob is left out there."""
    from torchdoctor.analyze.advice.knobs import engine_knobs

    session = slow_session()
    policy = {"kind": "module", "path": "policy", "name": "policy", "type": "Policy",
              "forward_ms": {"mean": 6.0}, "calls_per_step": 160.0}  # fmt: skip
    session["tree"] = {**session["tree"], "children": [policy]}
    assert not [a for a in engine_knobs(session) if "compile" in a.title]
    policy["calls_per_step"] = 2.0  # 3 ms a call: compiling can pay
    assert [a for a in engine_knobs(session) if "compile" in a.title]
    # reinforce as profiled: 0.27 ms a call in the detailed step, 63% of it the profiler's
    policy.update(forward_ms={"mean": 0.27 * 146}, calls_per_step=146.0)
    step = session["step_ms"]["median"]
    session["config"] = {**session.get("config", {}),
                         "profiler_overhead": {"overhead_ms": 0.63 * step}}  # fmt: skip
    assert not [a for a in engine_knobs(session) if "compile" in a.title]


def test_a_cold_finding_of_another_cause_on_the_line_is_not_called_the_same_cause():
    """nanoGPT's sample.py: TD604 (no KV cache) on `self(idx_cond)` joined the advice to
    generate the sequences as one batch and read 'the linter found the same cause'."""
    measured = Advice("one-sample-per-call", "2 sequences were generated one after another",
                      heat=0.4, locations=["m.py:316"], evidence=["batch 1"])  # fmt: skip
    cold = lint_findings({"lint": [{"code": "TD604", "message": "no KV cache", "path": "m.py",
                                    "line": 316, "replacement": None}]})  # fmt: skip
    (item,) = one_per_cause([measured, *cold])
    assert "m.py:316: the linter also flags this line (TD604)" in item.evidence
    assert not any("the same cause" in e for e in item.evidence)


def test_one_lint_code_on_two_measured_lines_saves_their_sum_when_both_are_fixed():
    """pytorch/examples GCN: test(...) on the train mask (line 181) and on the validation mask
    (line 182), both read only when printing (TD712): the recomputation advice they join said
    the one repeated call's saving alone; fixing both lines saves both calls' time."""
    from torchdoctor.analyze.advice.base import Advice
    from torchdoctor.analyze.advice.merge import one_per_cause

    invariant = Advice("loop-invariant", "Compute GCN once", estimated_saving_ms=2.9,
                       saving_range_ms=[2.9, 2.9], heat=0.2, cause="invariant",
                       locations=["/g/main.py:182"])  # fmt: skip

    def td712(line, ms):
        return Advice("lint", f"TD712 ({line})", estimated_saving_ms=ms / 2,
                      saving_range_ms=[ms / 2, ms * 0.95], heat=0.15, cause="invariant",
                      references=["TD712"], locations=[f"/g/main.py:{line}"])  # fmt: skip

    (merged,) = one_per_cause([invariant, td712(181, 3.0), td712(182, 2.4)])
    assert merged.estimated_saving_ms == pytest.approx(2.9)  # (more than 1.5 + 1.2)
    assert merged.saving_range_ms == pytest.approx([2.9, 0.95 * 5.4])
    assert "the 2 TD712 lines together (main.py:181, main.py:182)" in merged.evidence[-2]
    (alone,) = one_per_cause([invariant, td712(181, 3.0)])  # (one line: nothing to add up)
    assert alone.saving_range_ms == pytest.approx([2.9, 2.9])

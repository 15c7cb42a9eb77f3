"""Each advice rule fires on a crafted session and stays silent on a clean one; ranking."""

from __future__ import annotations

import pytest
from reports_sessions import (
    TRAIN,
    anomaly_session,
    between_steps_session,
    checkpointing_session,
    clean_session,
    copy_of,
    decode_session,
    library_loop_session,
    library_session,
    node,
    optimizer_session,
    oversubscribed_session,
    periodic_session,
    python_lines_session,
    recompile_session,
    s,
    slow_session,
)
from reports_sessions_crafted import (
    MORE_CRAFTED,
    after_steps_session,
    communication_session,
    dropout_session,
    embedding_gradient_session,
    host_batch_session,
    hot_line_session,
    padding_session,
    page_faults_session,
    respawn_session,
    rnn_per_step_session,
    single_long_step_session,
    torch_sync_session,
    unattributed_session,
    unused_outputs_session,
)

from torchdoctor.analyze.advice import RULES, Advice, advise, amdahl_saving
from torchdoctor.analyze.advice.backward import backward_heavy
from torchdoctor.analyze.advice.cpu_work import cpu_work
from torchdoctor.analyze.advice.data_phase import data_loading
from torchdoctor.analyze.advice.knobs import engine_knobs
from torchdoctor.analyze.advice.lint_hot import lint_findings
from torchdoctor.analyze.advice.recompute import loop_invariant
from torchdoctor.analyze.advice.syncs import host_syncs
from torchdoctor.analyze.advice.train_inference import train_inference_ratio
from torchdoctor.analyze.advice.unattributed import unattributed
from torchdoctor.session import Session

ALL_RULES = list(RULES)


CRAFTED = {
    "emulated_bf16": lambda: {**slow_session(), "environment": {"device": "cpu", "bf16_native": False,
                              "knobs": {"autocast": True, "autocast_dtype": "bfloat16"}}},  # fmt: skip
    "periodic_steps": periodic_session,
    "between_steps": between_steps_session,
    "python_outside_torch": python_lines_session,
    "optimizer_step": optimizer_session,
    "float64_training": lambda: optimizer_session(dtype="float64"),
    "activation_checkpointing": checkpointing_session,
    "decode_without_cache": decode_session,
    "anomaly_detection": anomaly_session,
    "recompiles": recompile_session,
    "torch_syncs": torch_sync_session,
    "unattributed": unattributed_session,
    "communication": communication_session,
    "library_syncs": library_session,
    "library_loop": library_loop_session,
    "hot_line_advice": hot_line_session,
    "host_batch": host_batch_session,
    "dropout_share": dropout_session,
    "single_long_step": single_long_step_session,
    "cpu_oversubscription": oversubscribed_session,
    **MORE_CRAFTED,  # (a busy machine, LBFGS's bookkeeping)
    "padding_waste": padding_session,
    "kernel_page_faults": page_faults_session,
    "worker_respawn": respawn_session,
    "after_steps": after_steps_session,
    "rnn_per_step": rnn_per_step_session,
    "embedding_gradient": embedding_gradient_session,
    "unused_outputs": unused_outputs_session,
    "one_sample_per_call": lambda: {**slow_session(), "steps": [{"input_shape": [1, 9]}] * 24},
    "grad_passes": lambda: {**slow_session(), "grad_passes": [  # (a Jacobian row by row)
        {"file": "/w/reg.py", "line": 8, "location": "reg.py:8", "passes_per_step": 32.0,
         "ms_per_step": 0.5 * slow_session()["step_ms"]["median"], "code": "J = jacobian(f, x)"}]},
}


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.__name__)
def test_rule_fires_on_crafted_session(rule):
    found = rule(CRAFTED.get(rule.__name__, slow_session)())
    assert found, f"{rule.__name__} did not fire on the crafted slow session"
    for item in found:
        assert isinstance(item, Advice)
        assert item.title and item.evidence and item.fix
        assert item.confidence in ("high", "medium", "low")


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.__name__)
def test_rule_is_silent_on_clean_session(rule):
    assert rule(clean_session()) == []


def test_rules_accept_a_session_object():
    assert advise(Session.from_dict(slow_session()))


def test_loop_invariant_saving_is_repeated_calls_times_call_time():
    (item,) = loop_invariant(slow_session())
    assert item.estimated_saving_ms == pytest.approx(9 * 1.5)
    assert "model.encoder" in item.title


def test_loop_invariant_advises_the_outermost_recomputed_module_by_tree_ancestry():
    """With model=None the first top-level module's children have unprefixed paths ("emb"
    under "TextEncoder"): the tree, not the dotted path, says emb is inside TextEncoder."""

    def record(path):
        return {"path": path, "calls_per_step": 2, "identical_input_calls": 1,
                "time_per_call_ms": 3.0, "source": None}  # fmt: skip

    session = {
        "step_ms": {"median": 20.0},
        "recomputation": [record("TextEncoder"), record("emb")],
        "tree": {"path": "", "children": [
            {"path": "TextEncoder", "children": [{"path": "emb", "children": []}]}]},
    }  # fmt: skip
    assert [a.title.split(" once")[0] for a in loop_invariant(session)] == ["Compute TextEncoder"]


def test_loop_invariant_ignores_single_calls():
    session = slow_session()
    session["recomputation"][0]["identical_input_calls"] = 0
    assert loop_invariant(session) == []


def test_host_syncs_uses_measured_stall_and_lists_lines():
    found = host_syncs(slow_session())
    scalar = next(a for a in found if ".item()" in a.title)
    assert scalar.estimated_saving_ms == pytest.approx(0.8 + 0.5)  # stall_ms is per step
    assert scalar.confidence == "high"
    assert any("train.py:88" in line for line in scalar.evidence)
    shape = next(a for a in found if a is not scalar)
    assert shape.estimated_saving_ms is None  # stall not measured: never invented


def test_host_syncs_on_cpu_leave_the_saving_unknown():
    session = slow_session()
    session["environment"]["device"] = "cpu"
    for record in session["syncs"]:
        record["stall_ms"] = None
    assert all(a.estimated_saving_ms is None for a in host_syncs(session))


def test_host_syncs_skip_log_interval_reads_and_the_optimizers_own():
    def record(op, per_step, phase, line):
        return {"kind": "item", "op": op, "file": "t.py", "line": line, "count": 10,
                "per_step": per_step, "phase": phase, "stall_ms": None}  # fmt: skip

    session = {
        "step_ms": {"median": 5.0},
        "environment": {"device": "cpu"},
        "syncs": [
            record('print(f"epoch {loss.item()}")', 0.03, "other", 3),  # once per epoch
            record("loss = optimizer.step(closure)", 38.0, "optimizer", 4),  # LBFGS inside
        ],
    }
    assert host_syncs(session) == []
    session["syncs"].append(record("total += loss.item()", 1.0, "other", 5))
    (advice,) = host_syncs(session)
    assert any("t.py:5" in line for line in advice.evidence)
    assert not any("t.py:3" in line or "t.py:4" in line for line in advice.evidence)


def test_compile_advice_names_the_step_when_there_is_no_module():
    session = {
        "step_ms": {"median": 10.0},
        "phases": {"forward": {"median": 4.0}, "backward": {"median": 4.0}},
        "environment": {"device": "cpu"},
        "tree": {"path": "", "kind": "module", "children": [
            {"path": "loss", "kind": "region", "children": []}]},
    }  # fmt: skip
    (advice,) = engine_knobs(session)
    assert advice.title == "torch.compile the step" and "model" not in advice.code
    session["tree"]["children"].append({"path": "Linear", "kind": "module", "children": []})
    assert engine_knobs(session)[0].title == "torch.compile the model"


def test_compile_evidence_of_an_inference_loop_names_no_backward():
    session = {
        "step_ms": {"median": 10.0},
        "phases": {"forward": {"median": 9.0}},  # a sampler: each step one forward
        "environment": {"device": "cpu"},
        "tree": {"path": "", "kind": "module", "children": [
            {"path": "unet", "kind": "module", "children": []}]},
    }  # fmt: skip
    (advice,) = engine_knobs(session)
    assert "the forward passes are 9 ms" in advice.evidence[0], advice.evidence
    session["phases"]["backward"] = {"median": 0.5}
    assert "forward + backward are 9.5 ms" in engine_knobs(session)[0].evidence[0]


def test_dataloader_findings_the_run_contradicts_are_dropped():
    def finding(code):
        return {"code": code, "severity": "info", "message": code, "path": "t.py", "line": 3,
                "replacement": None}  # fmt: skip

    findings = [finding("TD401"), finding("TD403")]
    codes = lambda s: {a.references[0] for a in lint_findings(s, findings)}  # noqa: E731
    assert codes({}) == {"TD401", "TD403"}  # no runtime evidence: both kept
    no_workers = {"environment": {"data_loaders": [{"num_workers": 0}]}}
    assert codes(no_workers) == {"TD401"}  # workers=0 at run time: nothing to persist
    workers = {"environment": {"data_loaders": [{"num_workers": 2, "persistent_workers": False}]}}
    assert codes(workers) == {"TD403"}  # workers were used: TD401 does not apply
    persisted = {"environment": {"data_loaders": [{"num_workers": 2, "persistent_workers": True}]}}
    assert codes(persisted) == set()
    # an in-memory dataset: loading measured at 0.4% of the step, workers can hide no more
    fast = {**no_workers, "step_ms": {"median": 84.0}, "phases": {"data": {"median": 0.39}}}
    assert codes(fast) == set()
    slow = {**no_workers, "step_ms": {"median": 84.0}, "phases": {"data": {"median": 12.0}}}
    assert codes(slow) == {"TD401"}


def test_dataloader_findings_about_rarely_used_loaders_are_cold():
    """minGPT's adder: its evaluation's loader (no workers) fed 1 step of 300, the training
    loader (4 workers) all of them; TD401 on the evaluation's loader is no suspect of the step.
    TD402 (no pinned memory) on a CPU run: there is no host-to-GPU copy to speed up, so the
    run's advice leaves it out (pytorch/examples dcgan on a CPU listed it "not hot")."""
    finding = {"code": "TD401", "severity": "info", "message": "no workers",
               "path": "/home/me/proj/train.py", "line": 55, "replacement": None}  # fmt: skip
    session = slow_session()  # (line 55: inside its region pac_loss, 10% of the step: hot)
    session["lint"] = [finding]
    session["config"]["steps"] = 300
    loaders = [{"num_workers": 0, "steps": 1}, {"num_workers": 4, "steps": 300}]
    session["environment"]["data_loaders"] = loaders
    session["phases"]["data"] = {"median": 30.0, "mean": 30.0}
    (item,) = [a for a in lint_findings(session) if "TD401" in a.references]
    assert item.heat == 0.0 and "not hot" in item.title
    loaders[0]["steps"] = 300  # ... the same loader feeding every step is a suspect again
    (item,) = [a for a in lint_findings(session) if "TD401" in a.references]
    assert item.heat > 0
    finding["code"] = "TD402"
    session["config"]["device"] = "cpu"
    assert not [a for a in lint_findings(session) if "TD402" in a.references]
    session["config"]["device"] = "cuda:0"
    (item,) = [a for a in lint_findings(session) if "TD402" in a.references]
    assert item.heat > 0


def test_backward_heavy_saving_assumes_typical_ratio():
    (item,) = backward_heavy(slow_session())
    assert "pac_loss" in item.title
    assert item.estimated_saving_ms == pytest.approx(20.0 - 2 * 2.0)


def test_train_inference_ratio_threshold():
    session = slow_session()
    session["inference"]["train_inference_ratio"] = 19.0
    assert train_inference_ratio(session) == []


def test_data_loading_threshold_and_saving():
    (item,) = data_loading(slow_session())
    assert item.estimated_saving_ms == pytest.approx(amdahl_saving(200.0, 25 / 200, 2.0))
    session = slow_session()
    session["phases"]["data"] = s(19.0)  # 9.5% of the step
    assert data_loading(session) == []


def test_cpu_work_attributes_round_trip_to_enclosing_region():
    found = cpu_work(slow_session())
    assert any("linear_sum_assignment" in a.title for a in found)
    item = next(a for a in found if "linear_sum_assignment" in a.title)
    assert any("train.py:72" in line for line in item.evidence)


def test_engine_knobs_skip_knobs_in_use_and_add_channels_last_for_conv():
    session = slow_session()
    session["environment"]["knobs"] = {"autocast": True, "tf32": True, "compile": None}
    titles = [a.title for a in engine_knobs(session)]
    assert titles == ["torch.compile the model"]
    conv = node("model.conv1", 30.0, 60.0, type="Conv2d")
    session["tree"]["children"][0]["children"].append(conv)
    assert any("channels_last" in a.title for a in engine_knobs(session))
    cpu = slow_session()
    cpu["environment"]["device"] = "cpu"
    assert all("TF32" not in a.title and "autocast" not in a.title for a in engine_knobs(cpu))


def test_engine_knobs_ranges_are_stated():
    for item in engine_knobs(slow_session()):
        low, high = item.saving_range_ms
        assert 0 < low <= high
        assert any("expected" in e and ("on that part" in e or "on the other" in e) for e in item.evidence)


def test_lint_hot_findings_rank_above_cold_ones():
    ranked = advise(slow_session())
    hot = next(a for a in ranked if "TD201" in a.references)
    cold = next(a for a in ranked if "TD301" in a.references)
    # TD201 is on the recorded sync line 88: one advice with the sync evidence
    assert hot.rule != "lint" and any(e.startswith("also found by:") for e in hot.evidence)
    assert any("loss.item()" in e for e in hot.evidence)
    assert hot.heat > cold.heat == 0.0
    assert hot.priority < cold.priority


def test_lint_argument_overrides_session_findings():
    finding = {"code": "TD999", "message": "x", "path": TRAIN, "line": 55}
    (item,) = lint_findings(slow_session(), [finding])
    assert "pac_loss" in item.evidence[0]  # line 55 lies inside the pac_loss region


def test_advise_ranks_and_numbers_priorities():
    found = advise(slow_session())
    assert [a.priority for a in found] == list(range(1, len(found) + 1))
    generic = [a for a in found if a.rule == "engine-knobs"]

    def bound_only(a):  # a saving stated as an upper bound (range from 0) ranks as unknown
        return bool(a.saving_range_ms) and a.saving_range_ms[0] == 0

    def small(a):  # a saving under 2% of the 200 ms step ranks with the evidence
        return bool(a.estimated_saving_ms) and a.estimated_saving_ms < 4.0

    measured = [a for a in found if a.estimated_saving_ms and a.rule != "engine-knobs"
                and not bound_only(a) and not small(a)]  # fmt: skip
    evidence = [a for a in found if (not a.estimated_saving_ms or bound_only(a)) and a.heat > 0]
    small_ones = [a for a in found if small(a) and a.rule != "engine-knobs"]
    assert generic and measured and evidence and small_ones
    # measured savings, then evidence without a saving (and small savings), then knobs
    assert max(a.priority for a in measured) < min(a.priority for a in evidence + small_ones)
    assert max(a.priority for a in evidence + small_ones) < min(a.priority for a in generic)
    # the 1.3 ms sync stall (0.65% of the step) ranks below the evidence covering more of it
    assert all(s.priority > e.priority for s in small_ones for e in evidence
               if e.heat > s.estimated_saving_ms / 200.0)  # fmt: skip
    for item in measured + generic:
        assert item.estimated_saving_pct == pytest.approx(item.estimated_saving_ms / 2.0)


def test_savings_never_exceed_the_step():
    for item in advise(slow_session()):
        if item.estimated_saving_ms is not None:
            assert 0 <= item.estimated_saving_ms <= 200.0


def test_advise_rejects_non_mapping():
    with pytest.raises(TypeError, match="Session"):
        advise([1, 2])


def test_empty_session_gives_no_advice():
    assert advise(copy_of(Session.new("x", with_environment=False).to_dict())) == []


def test_fractions_use_the_mean_when_recorded():
    # means add up across the tree (the tree renderer shows them); medians need not
    session = slow_session()
    session["step_ms"]["mean"] = 220.0
    (item,) = data_loading(session)
    assert item.estimated_saving_ms == pytest.approx(amdahl_saving(220.0, 25 / 220, 2.0))


def test_backward_heavy_skips_stock_layers():
    layer = node("decoder.0", 0.1, 50.0, type="Linear")
    root = node("", 0.1, 50.0, kind="root", children=[layer])
    assert backward_heavy({"tree": root, "step_ms": s(60.0)}) == []
    layer["type"] = "PartAwareLoss"
    assert backward_heavy({"tree": root, "step_ms": s(60.0)})
    # a block of an installed package (transformers' GPT2Block): no user code in it either
    layer.update(type="GPT2Block", source={"file": "/v/site-packages/transformers/gpt2.py"})
    assert backward_heavy({"tree": root, "step_ms": s(60.0)}) == []


def test_backward_heavy_judges_a_composite_by_its_own_code():
    # all of the model's backward is in stock layers: nothing of the user's to detach
    layers = [node("m.0", 10.0, 45.0, type="Linear"), node("m.1", 10.0, 45.0, type="Linear")]
    model = node("m", 20.5, 90.5, type="MyModel", children=layers)
    root = node("", 20.5, 90.5, kind="root", children=[model])
    assert backward_heavy({"tree": root, "step_ms": s(111.0)}) == []


def test_lint_accepts_finding_objects():
    finding_class = pytest.importorskip("torchdoctor.lint.finding").Finding
    finding = finding_class("TD201", "warning", ".item() in loop", TRAIN, 88, 5, 88, 20)
    (item,) = lint_findings(slow_session(), [finding])
    assert item.heat == pytest.approx(0.15) and "TD201" in item.title  # 3 syncs per step


def test_referenced_ops_exist():
    import torchdoctor.ops as ops
    from torchdoctor.analyze.advice.dominant import OPS_FOR

    for _, names in OPS_FOR:
        for name in names:
            assert hasattr(ops, name.rsplit(".", 1)[1]), f"advice references missing {name}"


def test_host_syncs_code_change_quotes_the_recorded_lines():
    scalar = next(a for a in host_syncs(slow_session()) if ".item()" in a.title)
    assert "loss.item()    # train.py:88" in scalar.code
    assert "LazyMetrics" in scalar.code


def test_unattributed_names_lint_suspects_outside_modules():
    session = unattributed_session()
    session["lint"] = [
        {"code": "TD102", "message": "solve in a loop", "path": TRAIN, "line": 900},
    ]
    (item,) = unattributed(session)
    assert item.rule == "unattributed" and item.confidence == "high"
    assert any("suspect:" in e and "TD102" in e for e in item.evidence)
    # the same finding ranks as a suspect, not as cold lint
    (finding,) = lint_findings(session)
    assert finding.heat > 0 and "unattributed code" in finding.title


def test_ddps_all_reduce_wait_is_not_told_as_code_outside_modules():
    """A torchrun DDP tutorial: its 1.02 ms "outside any module" was DDP's wait for the
    all-reduce at the end of backward, told by the collectives advice already."""
    session = unattributed_session()
    (item,) = unattributed(session)
    rest = float(item.evidence[0].split(" ms")[0])
    session["collectives"] = {"exposed_ms_per_step": rest}
    assert unattributed(session) == []


def test_a_dataloader_finding_is_judged_by_the_loader_its_function_fetches_from():
    """minGPT: Trainer.run builds its loader with num_workers=config.num_workers (4: the linter
    cannot read it) and iterates it; eval_split builds one with num_workers=0. TD401 on the
    Trainer's line is contradicted by its own loader, not kept alive by the evaluation's."""

    def finding(path, line):
        return {"code": "TD401", "severity": "info", "message": "no workers", "path": path,
                "line": line, "replacement": None}  # fmt: skip

    train = {"num_workers": 4, "persistent_workers": False, "iterators": 1, "steps": 300,
             "site": {"file": "/m/mingpt/trainer.py", "function_line": 60, "line": 79}}
    evaluate = {"num_workers": 0, "persistent_workers": False, "iterators": 2, "steps": 1,
                "site": {"file": "/m/adder.py", "function_line": 148, "line": 153}}  # fmt: skip
    session = {"environment": {"data_loaders": [train, evaluate]}, "config": {"steps": 300}}
    found = [finding("/m/mingpt/trainer.py", 68), finding("/m/adder.py", 151)]
    (item,) = lint_findings(session, found)  # the evaluation's finding only, and cold
    assert item.locations == ["/m/adder.py:151"] and item.heat == 0.0

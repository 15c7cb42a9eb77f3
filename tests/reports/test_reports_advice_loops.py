"""The hot lines of one per-element Python loop are one cause: one advice for the loop, with
the specific cure of a line (a lint finding) first, then batching the rest."""

import copy

from reports_sessions import slow_session

from torchdoctor.analyze.advice import advise


def _row(line, code, ms, ops):
    return {
        "file": "/x/pool.py", "line": line, "location": f"pool.py:{line}", "function": "forward",
        "function_line": 9, "code": code, "owner": "", "owner_kind": "root", "loop_line": 12,
        "forward_ms": {"median": ms, "mean": ms}, "backward_ms": {"median": 0.0, "mean": 0.0},
        "total_ms": {"median": ms, "mean": ms}, "calls_per_step": 32.0,
        "torch_calls_per_step": 64.0,
        "top_ops": [{"op": ops, "forward_ms": ms, "backward_ms": 0.0, "calls_per_step": 32.0}],
    }  # fmt: skip


def _session(loop_line=12):
    session = slow_session()
    rest = next(c for c in session["tree"]["children"] if c["kind"] == "self")
    rest["forward_ms"] = {"median": 80.0, "mean": 80.0}  # (the lines' time is the root's own)
    rows = [
        _row(14, "pooled.append(feats[mask].max(0).values)", 30.0, "Tensor.max"),
        _row(13, "mask = torch.where(batch_idx == s)[0]", 8.0, "torch.where"),
    ]
    rows[1]["loop_line"] = loop_line
    session["hot_lines"] = {"steps": 5, "lines": rows}
    session["lint"] = [{"code": "TD301", "path": "/x/pool.py", "line": 13, "severity": "warning",
                        "message": "torch.where(batch_idx == s) inside a loop over values"}]  # fmt: skip
    return session


def _line_advice(session):
    return [a for a in advise(session) if any("pool.py" in loc for loc in a.locations)]


def test_two_hot_lines_of_one_loop_are_one_advice_with_the_specific_cure_first():
    (item,) = _line_advice(_session())
    assert item.fix.startswith("Sort once and split with torchdoctor.ops.group_by_segment")
    assert "Then batch the rest of the loop" in item.fix
    assert item.evidence[0] == "one Python loop (pool.py:12), lines 13, 14 of its body"
    assert sorted(item.locations) == ["/x/pool.py:13", "/x/pool.py:14"]


def test_when_both_lines_are_hot_the_loop_is_still_one_advice():
    session = _session()
    session["hot_lines"]["lines"][1]["total_ms"] = {"median": 15.0, "mean": 15.0}
    session["hot_lines"]["lines"][1]["forward_ms"] = {"median": 15.0, "mean": 15.0}
    (item,) = _line_advice(session)
    assert "group_by_segment" in item.fix and "Then batch the rest of the loop" in item.fix


def test_lines_of_different_loops_stay_apart():
    items = _line_advice(_session(loop_line=20))
    assert len(items) == 2


def test_a_line_run_once_per_step_in_the_training_loop_is_no_loop_cause():
    session = _session()
    for row in session["hot_lines"]["lines"]:
        row["calls_per_step"], row["torch_calls_per_step"] = 1.0, 2.0
    assert len(_line_advice(copy.deepcopy(session))) == 2


def test_a_deprecated_entry_point_is_never_a_suspect_of_the_step_time():
    """TD504 (torch.cuda.amp.GradScaler) outside every module: hygiene, not a cost."""
    session = _session()
    session["lint"] = [{"code": "TD504", "path": "/x/pool.py", "line": 3, "severity": "warning",
                        "message": "torch.cuda.amp.GradScaler is deprecated"}]  # fmt: skip
    session["label"] = "pool.py"
    (item,) = [a for a in advise(session) if "TD504" in a.title]
    assert item.title.endswith("(1 finding(s), not hot)") and item.heat == 0.0


def test_a_generation_loop_finding_is_no_suspect_of_a_training_step():
    """nanoGPT's model.py holds generate() (TD604) beside the forward the training run
    profiles: outside every module, but a sampling loop does not run in a training step."""
    session = _session()
    session["config"]["step_boundary"] = "optimizer"
    session["label"] = "pool.py"
    session["lint"] = [{"code": "TD604", "path": "/x/pool.py", "line": 3, "severity": "warning",
                        "message": "`self(idx_cond)` gets the whole sequence"}]  # fmt: skip
    (item,) = [a for a in advise(session) if "TD604" in a.title]
    assert item.title.endswith("(1 finding(s), not hot)")


def test_a_layer_definition_is_no_suspect_of_the_step_time():
    """TD506 on a LightningModule's `nn.Conv2d(3, 32, 3, padding=1)` before a BatchNorm2d, in
    its __init__: built once before the steps, never "in unattributed code"."""
    session = _session()
    session["label"] = "pool.py"
    session["lint"] = [{"code": "TD506", "path": "/x/pool.py", "line": 3, "severity": "info",
                        "message": "`torch.nn.Conv2d` has a bias and feeds BatchNorm"}]  # fmt: skip
    (item,) = [a for a in advise(session) if "TD506" in a.title]
    assert item.title.endswith("(1 finding(s), not hot)") and item.heat == 0.0
    assert "unattributed" not in item.title


def test_code_outside_modules_no_larger_than_the_profilers_cost_is_not_sent_to_regions():
    """cleanrl's DQN: 48% of a 9.4 ms detailed step in the root's (self), the detailed step
    6.5 ms slower than a light one (hooks on small module calls): the profiler's cost could be
    all of it, so 'name that code with torchdoctor.region' is not said."""
    from reports_sessions import slow_session

    from torchdoctor.analyze.advice.unattributed import unattributed

    session = slow_session()
    rest = next(c for c in session["tree"]["children"] if c["kind"] == "self")
    rest["forward_ms"] = {"median": 80.0, "mean": 80.0}
    rest["backward_ms"] = {"median": 40.0, "mean": 40.0}
    assert unattributed(session)  # (the profiler's cost unknown: said)
    step = session["step_ms"]["median"]
    session.setdefault("config", {})["profiler_overhead"] = {"overhead_ms": 0.9 * step}
    assert unattributed(session) == []
    session["config"]["profiler_overhead"] = {"overhead_ms": 0.05 * step}
    assert unattributed(session)  # (a small cost leaves most of it the code's own)

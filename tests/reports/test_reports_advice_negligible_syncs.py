"""Syncs too few for their step's length get no advice (base.negligible_syncs), in every rule that
weighs syncs; a measured stall always counts. Found on pytorch/examples'
time_sequence_prediction: LBFGS steps of 37 s, 20 `print(loss.item())` reads each, and a test
loss read once per step, ranked as advice."""

from __future__ import annotations

from torchdoctor.analyze.advice.library_syncs import library_syncs
from torchdoctor.analyze.advice.lint_hot import lint_findings
from torchdoctor.analyze.advice.syncs import host_syncs
from torchdoctor.analyze.advice.torch_syncs import torch_syncs

TRAIN = "/work/t/train.py"


def _session(step_ms: float, *records: dict) -> dict:
    return {"step_ms": {"median": step_ms}, "environment": {"device": "cpu"}, "syncs": list(records)}


def _read(per_step: float, line: int = 65, stall: float | None = None, **extra) -> dict:
    return {"kind": "item", "op": "print('loss:', loss.item())", "file": TRAIN, "line": line,
            "count": 40, "per_step": per_step, "phase": "forward", "stall_ms": stall, **extra}  # fmt: skip


def test_user_reads_in_a_long_step_get_no_advice_but_do_in_a_short_one():
    assert host_syncs(_session(37_000.0, _read(20.0))) == []
    (advice,) = host_syncs(_session(15.0, _read(1.0)))
    assert "defer .item()" in advice.title
    # 20 reads at 1 ms each in a 1.5 s step: 1.3%, still worth a look
    assert len(host_syncs(_session(1_500.0, _read(20.0)))) == 1


def test_a_measured_stall_is_advice_however_long_the_step():
    (advice,) = host_syncs(_session(37_000.0, _read(20.0, stall=900.0)))
    assert advice.estimated_saving_ms == 900.0


def test_data_dependent_shapes_are_weighed_the_same_way():
    shape = _read(3.0, kind="nonzero")
    shape["kind"] = "nonzero"
    assert host_syncs(_session(10_000.0, shape)) == []
    assert len(host_syncs(_session(100.0, shape))) == 1


def test_torch_internal_syncs_in_a_long_step_get_no_advice():
    rec = _read(2.0, op="q = Normal(mu, std)", kind="bool",
                inside="distributions/distribution.py:__init__")  # fmt: skip
    rec["kind"] = "bool"
    assert torch_syncs(_session(60_000.0, rec)) == []
    assert len(torch_syncs(_session(20.0, rec))) == 1


def test_library_syncs_in_a_long_step_get_no_advice():
    rec = _read(2.0, library="transformers", user_file=TRAIN, user_line=120,
                user_op="trainer.train()")  # fmt: skip
    assert library_syncs(_session(60_000.0, rec)) == []
    assert len(library_syncs(_session(20.0, rec))) == 1
    rec["stall_ms"] = 500.0  # measured on CUDA: it counts
    assert len(library_syncs(_session(60_000.0, rec))) == 1


def test_a_lint_finding_on_a_negligible_sync_line_is_not_hot():
    finding = {"code": "TD201", "severity": "warning", "message": "`.item()` forces a sync",
               "path": TRAIN, "line": 74, "replacement": None}  # fmt: skip
    long_step = _session(37_000.0, _read(1.0, line=74))
    (item,) = lint_findings({**long_step, "lint": [finding]})
    assert item.heat == 0.0 and "not hot" in item.title
    # (it says why: the profile saw the syncs, too few for a 37 s step; not "never hot")
    assert item.evidence == [
        "train.py:74: the profile recorded its syncs, too few to matter in a step this long"
    ]
    short_step = _session(15.0, _read(1.0, line=74))
    (item,) = lint_findings({**short_step, "lint": [finding]})
    assert item.heat > 0 and "on a hot line" in item.title


def test_a_round_trip_once_per_long_step_is_no_cpu_work_advice():
    from torchdoctor.analyze.advice.cpu_work import cpu_work

    trip = _read(1.0, line=75, op="y = pred.detach().numpy()")
    trip["kind"] = "numpy"
    assert cpu_work({**_session(37_000.0, trip), "tree": None}) == []
    (advice,) = cpu_work({**_session(15.0, trip), "tree": None})
    assert "round trips" in advice.title


def test_two_findings_on_one_line_name_it_once():
    """gpt2-style-transformer's train.py:256 reads `loss_acum.item()` and `val_loss.item()` in
    one f-string: its not-hot TD201 advice said "train.py:256, train.py:256" (clients round 14)."""
    findings = [{"code": "TD201", "severity": "warning", "message": "`.item()` forces a sync",
                 "path": TRAIN, "line": 256, "col": col, "replacement": None}
                for col in (40, 80)]  # fmt: skip
    (item,) = lint_findings({**_session(5_800.0, _read(2.0, line=256)), "lint": findings})
    assert "(2 finding(s), not hot)" in item.title
    assert item.evidence == [
        "train.py:256: the profile recorded its syncs, too few to matter in a step this long"
    ]

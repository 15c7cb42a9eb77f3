"""The tune's schedule with fake trials (no process started): interleaving, paired ratios,
the combination trial, Ctrl-C keeping the trials done, and the budget."""

from __future__ import annotations

import pytest

from torchdoctor.tuning import runner

OBSERVED = {
    "device": "cpu", "cuda_available": False, "backward": True, "boundary": "optimizer",
    "roots": [{"type": "Net", "params": 100, "conv": True}],
    "optimizers": [{"type": "SGD", "fused_supported": True, "foreach_supported": True}],
    "loaders": [], "data_fraction": 0.0,
}  # fmt: skip
STEP_MS = {(): 10.0, ("channels_last",): 8.0, ("foreach_optimizer",): 9.0,
           ("channels_last", "foreach_optimizer"): 7.0}  # fmt: skip


def _fake(calls, interrupt_at=None, elapsed=None, wall_s=1.2):
    def run_trial(script, args, knobs, **kwargs):
        calls.append(tuple(knobs))
        if elapsed is not None:
            elapsed[0] += wall_s
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        ms = STEP_MS[tuple(knobs)]
        return {"knobs": list(knobs), "error": None, "warmup": 1, "step_ms": [50.0] + [ms] * 5,
                "values": [2.0, 1.5, 1.2], "startup_s": 1.0, "wall_s": wall_s,
                "peak_memory_bytes": 1000, "observed": OBSERVED, "graph_breaks": []}  # fmt: skip

    return run_trial


def test_trials_are_interleaved_and_the_ratio_is_the_median_of_pairs(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(runner, "run_trial", _fake(calls))
    result = runner.tune_script("train.py", budget_s=1000, rounds=2, workdir=tmp_path,
                                knobs=["channels_last", "foreach_optimizer", "tf32"])  # fmt: skip
    assert calls[:9] == [(), (), ("channels_last",), (), ("foreach_optimizer",),
                         (), ("channels_last",), (), ("foreach_optimizer",)]  # fmt: skip
    rows = {r["knob"]: r for r in result["rows"]}
    assert rows["channels_last"]["speedup"] == {"median": 1.25, "low": 1.25, "high": 1.25,
                                                "pairs": 2}  # fmt: skip
    assert rows["channels_last"]["verdict"] == "faster" and rows["tf32"]["status"] == "skipped"
    assert result["baseline"]["drift"] == 0.0
    # the best compatible set is measured as (baseline, combination) pairs
    assert calls[9:] == [(), ("channels_last", "foreach_optimizer")] * 2
    assert result["combination"]["speedup"]["median"] == pytest.approx(10 / 7)
    assert result["chosen"] == ["channels_last", "foreach_optimizer"]
    assert "channels_last" in result["snippet"] and "foreach=True" in result["snippet"]


def test_ctrl_c_keeps_the_trials_done_so_far(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(runner, "run_trial", _fake(calls, interrupt_at=6))
    result = runner.tune_script("train.py", budget_s=1000, rounds=2, workdir=tmp_path,
                                knobs=["channels_last", "foreach_optimizer"])  # fmt: skip
    assert result["interrupted"]
    rows = {r["knob"]: r for r in result["rows"]}
    assert rows["channels_last"]["speedup"]["pairs"] == 1
    assert rows["foreach_optimizer"]["speedup"]["pairs"] == 1
    assert result["combination"] is None


def test_a_small_budget_leaves_knobs_out_and_says_so(monkeypatch, tmp_path):
    calls, elapsed = [], [0.0]

    class Clock(runner._Clock):  # each fake trial takes 3 s of this clock
        @property
        def spent(self):
            return elapsed[0]

    monkeypatch.setattr(runner, "_Clock", Clock)
    monkeypatch.setattr(runner, "run_trial", _fake(calls, elapsed=elapsed, wall_s=3.0))
    result = runner.tune_script(
        "train.py", budget_s=15, workdir=tmp_path, knobs=["channels_last", "foreach_optimizer"]
    )
    rows = {r["knob"]: r for r in result["rows"]}
    assert rows["channels_last"]["status"] == "measured"
    assert rows["foreach_optimizer"]["reason"] == "no time left in the budget"
    assert calls == [(), (), ("channels_last",)]


def test_one_faster_pair_is_unconfirmed_not_accepted(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "run_trial", _fake([]))
    result = runner.tune_script("train.py", budget_s=1000, rounds=1, workdir=tmp_path,
                                knobs=["channels_last"])  # fmt: skip
    (row,) = result["rows"]
    assert row["speedup"]["median"] == 1.25 and row["verdict"] == "unconfirmed"
    assert not row["accepted"] and "--budget" in row["reason"] and result["chosen"] == []


def _budget_run(monkeypatch, tmp_path, budget, knobs):
    """A tune of ``knobs`` whose fake trials take 3 s each of a fake clock."""
    calls, elapsed = [], [0.0]

    class Clock(runner._Clock):
        @property
        def spent(self):
            return elapsed[0]

    monkeypatch.setattr(runner, "_Clock", Clock)
    monkeypatch.setitem(STEP_MS, ("bf16_autocast",), 20.0)  # (a CPU without bf16 units)
    monkeypatch.setattr(runner, "run_trial", _fake(calls, elapsed=elapsed, wall_s=3.0))
    result = runner.tune_script("train.py", budget_s=budget, workdir=tmp_path, knobs=knobs)
    return calls, {r["knob"]: r for r in result["rows"]}


def test_a_knob_far_slower_in_its_pair_gives_its_rounds_to_the_knobs_left_out(
    monkeypatch, tmp_path
):
    """cleanrl's PPO under --budget 100: bf16 autocast ran 3 rounds at 0.55x while the
    optimizer knobs got one pair each, all unconfirmed."""
    calls, rows = _budget_run(monkeypatch, tmp_path, 29,
                              ["bf16_autocast", "channels_last", "foreach_optimizer"])  # fmt: skip
    assert calls.count(("bf16_autocast",)) == 1 and rows["bf16_autocast"]["verdict"] == "slower"
    assert calls[3:] == [(), ("channels_last",), (), ("foreach_optimizer",),
                         (), ("channels_last",)]  # fmt: skip
    assert rows["channels_last"]["verdict"] == "faster"  # (its second pair confirmed it)
    assert rows["foreach_optimizer"]["status"] == "measured"


def test_a_knob_left_out_is_measured_before_a_third_pair_of_any(monkeypatch, tmp_path):
    calls, rows = _budget_run(monkeypatch, tmp_path, 33,
                              ["bf16_autocast", "channels_last", "foreach_optimizer"])  # fmt: skip
    assert calls.count(("channels_last",)) == 2 and ("foreach_optimizer",) in calls
    assert rows["channels_last"]["verdict"] == "faster"
    assert rows["foreach_optimizer"]["status"] == "measured"

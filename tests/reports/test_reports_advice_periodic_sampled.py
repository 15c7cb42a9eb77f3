"""Rule periodic-steps on a long run whose session lists a sample of its steps: the long steps
the sample left out are listed by the step store (``config.step_records.long_unkept``), so the
period, the count and the cost are the whole run's, not the sample's."""

from __future__ import annotations

import pytest

from torchdoctor.analyze.advice.periodic_steps import periodic_steps
from torchdoctor.analyze.advice.single_long_step import single_long_step
from torchdoctor.collect.long_steps import outliers
from torchdoctor.collect.step_store import StepStore

EVAL_MS, STEP_MS = 500.0, 2.4


def _session(n=3000, every=300, stalls=(), drop_list=False, evaluate=True, hiccups=()):
    """karpathy's bigram.py: estimate_loss() (400 forwards) every 300 of 3,000 steps, between
    a step's update and the next forward; the store keeps the first 500 steps and a sample."""
    store = StepStore()
    for i in range(n):
        long = evaluate and every and i % every == every - 1
        wall = STEP_MS + (EVAL_MS if long else 0.0) + (6.0 if i in {*stalls, *hiccups} else 0.0)
        store.append({"wall_ms": wall, "detailed": i < 5 or i == 899, "cpu_wait_ms": 6.0 if i
                      in stalls else 0.0, "model_calls": 401 if long else 1, "phases": {
                          "other": wall - 1.4, "backward": 0.5, "optimizer": 0.9}})  # fmt: skip
    steps = store.kept()
    detail = outliers(steps, [s for s in steps if s["detailed"]], store.unkept_long(), n)
    session = {"config": {"detail": detail}, "steps": steps}  # (as finish.py writes them)
    store.apply_to(session)
    if drop_list:  # (a session written before the store listed them)
        del session["config"]["step_records"]["long_unkept"]
    return session, store


def test_every_evaluation_of_a_sampled_run_counts_at_its_period_and_cost():
    session, store = _session()
    kept = [s["index"] for s in session["steps"] if s["wall_ms"] > 100.0]
    assert len(kept) < 10  # (the sample keeps few of the 10: the case at hand)
    (item,) = periodic_steps(session)
    assert item.title.startswith("Every 300 steps a step takes")
    assert "is 41% of the run" in item.title  # (10 x 500 ms of 3,000 x 2.4 ms + 5,000 ms)
    assert item.evidence[0].startswith("steps 299, 599, 899, 1199, 1499, 1799, ... (of 3,000)")
    assert item.estimated_saving_ms == pytest.approx(10 * EVAL_MS / 3000 / 2, rel=0.01)
    assert "+500 ms per long step" in item.evidence[1]


def test_a_session_without_the_list_reads_as_the_sample_and_says_so():
    session, _ = _session(drop_list=True)
    found = periodic_steps(session)
    assert all("kept of 3,000" in a.evidence[0] for a in found)  # (no claim of every step)


def test_steps_slowed_by_a_wait_for_a_core_are_not_listed():
    """A busy host: 400 steps after the first 500 waited 6 ms for a core (2.4 ms steps)."""
    stalls = set(range(600, 3000, 6))
    _, store = _session(stalls=stalls, evaluate=False)
    assert store.describe()["long_unkept"] == []
    _, store = _session(stalls=stalls)
    assert [i for i, _, _ in store.describe()["long_unkept"]] == [
        i for i in range(599, 3000, 300) if i not in {s["index"] for s in store.kept()}]


def test_a_single_long_step_the_sample_left_out_is_no_single_long_step_advice():
    session, _ = _session(every=0)
    session["config"]["step_records"]["long_unkept"] = [[2100, 900.0, 900.0]]
    assert periodic_steps(session) == [] and single_long_step(session) == []


def test_the_syncs_of_a_sampled_runs_evaluations_count_at_the_whole_runs_rate():
    """The sync audit counts an evaluation's 400 reads at the rate such steps come: 10 in
    3,000 steps (detailed step 899 the one the tree left out), not the sample's 4 in 756."""
    session, store = _session()
    steps = session["steps"]
    detailed = [s for s in steps if s["detailed"]]
    found = outliers(steps, detailed, store.unkept_long(), store.count)
    assert found["outlier_steps"] == [899]
    assert found["outlier_rate"] == pytest.approx(10 / 3000)
    kept = sum(1 for s in steps if s["wall_ms"] > 100.0)
    assert outliers(steps, detailed)["outlier_rate"] == pytest.approx(kept / len(steps))


def test_hiccups_of_a_few_ms_among_the_evaluations_keep_their_period():
    """bigram.py: 8 steps of 7.6-13 ms (on a core) among evaluations of 210-960 ms read '17 of
    2,999 steps take 3.1x to 393x the median' and '200 model calls per long step'."""
    session, _ = _session(hiccups=(601, 1302, 2308, 2401, 2425, 2630))
    (item,) = periodic_steps(session)
    assert item.title.startswith("Every 300 steps a step takes 209.3x the median: ")
    assert item.evidence[0].startswith("steps 299, 599, 899, 1199, 1499, 1799, ... (of 3,000)")


def _rollouts(n=400, stray=()):
    """minimalRL's DQN: an episode played between train()'s 10 updates (index 9 mod 10), its
    length growing as the agent learns: long only in the later ones; ``stray``: other long steps
    (a busy host's)."""
    steps = []
    for i in range(n):
        rollout = 0.15 * i if (i // 10) % 3 else 1.0  # (every third episode a short one)
        wall = 3.7 + (rollout if i % 10 == 9 else 0.0) + (20.0 if i in stray else 0.0)
        steps.append({"index": i, "wall_ms": wall, "detailed": False,
                      "phases": {"other": wall - 2.0, "backward": 1.0, "optimizer": 1.0}})  # fmt: skip
    return {"steps": steps}


def test_periodic_work_long_in_some_of_its_steps_keeps_its_period():
    """Read '112 of 1,959 steps take 2.4x to 26x the median', no period, though 102 of them
    came at index 9 mod 10 (the episodes between train() calls)."""
    (item,) = periodic_steps(_rollouts(stray=(167, 235, 236)))
    assert item.title.startswith("One step in 10 (")
    assert " at that place) takes " in item.title
    shown = item.evidence[0].split(" (of")[0].removeprefix("steps ").split(", ")
    assert all(int(i) % 10 == 9 for i in shown if i != "...")


def test_long_steps_at_no_common_phase_have_no_period():
    session = _rollouts()
    for s in session["steps"]:  # (the rollouts' lengths spread at random places instead)
        s["wall_ms"] = 3.7 + (30.0 if s["index"] in (57, 98, 131, 200, 277, 301, 346) else 0.0)
        s["phases"]["other"] = s["wall_ms"] - 2.0  # (their extra time between steps)
    (item,) = periodic_steps(session)
    assert item.title.startswith("7 of 400 steps take")

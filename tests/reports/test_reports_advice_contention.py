"""Rule cpu-contention and the off-core long steps: where the profiled thread's time went (on
a core, waiting for one, blocked), recorded for every step by collect/host_time.py."""

from __future__ import annotations

import pytest

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.cpu_contention import cpu_contention
from torchdoctor.analyze.advice.periodic_steps import periodic_steps
from torchdoctor.render.markdown import render_markdown
from torchdoctor.render.tree import contention_text


def _steps(n=60, wait=0.0, every=0, long=None):
    """Steps of 10 ms, ``wait`` ms of them waiting for a core; every ``every``-th step 100 ms
    longer, split as ``long`` = (on a core, waiting) ms of the extra (the rest blocked)."""
    out = []
    for i in range(n):
        step = {"index": i, "wall_ms": 10.0, "cpu_ms": 10.0 - wait, "cpu_wait_ms": wait,
                "detailed": False, "phases": {"data": 0.5, "forward": 0.0, "backward": 4.0,
                                              "optimizer": 1.0, "other": 4.5}}  # fmt: skip
        if every and i % every == every - 1:
            on_core, waiting = long
            step["wall_ms"] += 100.0
            step["phases"]["other"] += 100.0
            step["cpu_ms"] += on_core
            step["cpu_wait_ms"] += waiting
        out.append(step)
    return out


def test_a_run_that_waited_for_cores_all_along_says_the_machine_was_busy():
    steps = _steps(wait=4.0)
    env = {"threads": 2, "cpus": 2, "data_loaders": [{"num_workers": 2}]}
    (item,) = cpu_contention({"steps": steps, "environment": env})
    assert item.rule == "cpu-contention" and item.confidence == "high"
    assert item.title.endswith("waited for a CPU core 40% of the steps' time")
    assert item.estimated_saving_ms == pytest.approx(4.0)
    assert "the machine was busy all along" in item.evidence[1]
    assert "2 DataLoader workers beside torch's 2 threads on 2 usable cores" in item.evidence[2]
    assert "fewer DataLoader workers" in item.fix
    assert "OMP_NUM_THREADS=1" in item.fix  # (2 threads beside a busy process: each waits)
    (single,) = cpu_contention({"steps": steps, "environment": {**env, "threads": 1}})
    assert "OMP_NUM_THREADS" not in single.fix
    # it is the first advice, and the report's headline says so
    session = {"steps": steps, "environment": env, "step_ms": {"median": 10.0}}
    assert advise(session)[0].rule == "cpu-contention"
    assert contention_text(session).startswith("the profiled thread waited for a CPU core 40%")


@pytest.mark.parametrize(
    "steps, why",
    [
        (_steps(wait=0.5), "5% of the time: under the 10% worth a word"),
        (_steps(n=4, wait=5.0), "too few steps"),
        ([{k: v for k, v in s.items() if k != "cpu_wait_ms"} for s in _steps(wait=5.0)],
         "no run-queue figures (not Linux): nothing claimed"),
    ],
)
def test_no_contention_claimed_without_the_measured_wait(steps, why):
    assert cpu_contention({"steps": steps}) == [], why
    assert contention_text({"steps": steps}) is None, why


def test_long_steps_that_waited_for_cores_are_the_machines_not_periodic_work():
    """A busy burst every 20 steps (another job's): the long steps' extra time was spent
    waiting for a core, so there is no work in the loop to run less often."""
    (item,) = periodic_steps({"steps": _steps(every=20, long=(5.0, 80.0))})
    assert item.title.startswith("Every 20 steps a step takes 11.0x the median: the machine was busy")
    assert item.cause == "cpu-contention" and item.estimated_saving_ms is None
    assert "ready to run with no core free 240 ms" in item.evidence[1]
    assert "Run on an idle machine" in item.fix


def test_long_steps_that_were_blocked_are_io_or_a_sleep_done_less_often():
    """A checkpoint written to network storage every 20 steps: the thread blocked."""
    (item,) = periodic_steps({"steps": _steps(every=20, long=(3.0, 0.0))})
    assert "the profiled thread was blocked" in item.title
    assert item.cause == "periodic-work" and item.estimated_saving_ms == pytest.approx(2.5)
    assert "blocked (not runnable) 291 ms" in item.evidence[1]
    assert "asynchronously" in item.fix


def test_long_steps_blocked_in_backward_under_ddp_are_the_all_reduce_wait():
    """A torchrun DDP run: the long steps' extra time is in backward, where DDP waits for the
    other rank; "a checkpoint, a lock, slow storage" was the wrong cause there."""
    steps = _steps(every=20, long=(3.0, 0.0))
    for step in steps:
        if step["wall_ms"] > 10.0:  # (the extra 100 ms in backward, not after the step)
            step["phases"]["other"] -= 100.0
            step["phases"]["backward"] += 100.0
    (item,) = periodic_steps({"steps": steps, "collectives": {"world_size": 2}})
    assert "waited in backward for DDP's all-reduce" in item.title
    assert item.estimated_saving_ms is None and "ranks" in item.fix
    (single,) = periodic_steps({"steps": steps})  # (one process: blocked, as before)
    assert "the profiled thread was blocked" in single.title


def test_long_steps_that_computed_keep_the_periodic_work_advice():
    (item,) = periodic_steps({"steps": _steps(every=20, long=(95.0, 0.0))})
    assert item.title == (
        "Every 20 steps a step takes 11.0x the median: periodic work between steps is 33% of the run"
    )


def test_markdown_report_carries_the_contention_caveat():
    session = {"steps": _steps(wait=6.0), "step_ms": {"median": 10.0}, "config": {},
               "environment": {}}  # fmt: skip
    text = render_markdown(session)
    assert "- **Caveat:** the profiled thread waited for a CPU core 60%" in text


def test_a_wait_credited_late_is_capped_at_the_steps_time_off_a_core():
    """Linux 6.18 credited 4.8 ms of run-queue wait to a 1.5 ms step its thread spent on a core
    (EEVDF's delayed dequeue: a wait counted past the step it happened in): a step never waited
    longer than it was off a core."""
    steps = _steps(wait=0.0)
    for s in steps:
        s["cpu_wait_ms"] = 4.8  # (each 10 ms step on a core all along)
    assert cpu_contention({"steps": steps}) == []
    assert contention_text({"steps": steps}) is None


def test_long_steps_half_on_a_core_during_a_burst_of_contention_are_the_machines():
    """nanoGPT's train.py while another job ran (35 of 790 steps 8.1x the median): of their
    extra 10.6 s, 5.3 s on a core (OpenMP threads spinning for workers that lost their core)
    and 5.3 s waiting, where a typical step waited nothing."""
    (item,) = periodic_steps({"steps": _steps(every=20, long=(50.0, 50.0))})
    assert "the machine was busy" in item.title and item.cause == "cpu-contention"


def test_periodic_work_on_a_machine_busy_all_along_stays_periodic_work():
    """Every step waits half its time (a shared machine); an evaluation every 20 steps waits
    as much as the rest: it is the loop's work, slowed like everything else."""
    (item,) = periodic_steps({"steps": _steps(wait=5.0, every=20, long=(50.0, 50.0))})
    assert item.title.startswith("Every 20 steps a step takes 11.0x the median: periodic work")
    assert any("ready to run with no core free" in e for e in item.evidence)


def test_the_busy_machine_gain_is_the_waits_share_of_the_step_the_report_states():
    """A run whose waits came in bursts (a few long steps): the mean wait per step over the
    median step read 71% beside a 40% headline (an HF run of 811 steps); the gain is the
    wait's share of the step savings are stated against."""
    steps = _steps(n=60, wait=2.0, every=6, long=(10.0, 60.0))
    session = {"steps": steps, "step_ms": {"median": 10.0, "mean": 10.0}}
    share = sum(s["cpu_wait_ms"] for s in steps) / sum(s["wall_ms"] for s in steps)
    (item,) = [a for a in advise(session) if a.rule == "cpu-contention"]
    assert item.title.endswith(f"{100 * share:.0f}% of the steps' time")
    assert item.estimated_saving_pct == pytest.approx(100 * share)


def test_one_thread_or_one_worker_reads_in_the_singular():
    """PointNet++'s 10 workers beside one torch thread read "torch's 1 threads"."""
    from torchdoctor.analyze.advice.cpu_contention import _own_processes

    env = {"threads": 1, "cpus": 2, "data_loaders": [{"num_workers": 10}]}
    assert _own_processes({"environment": env}).endswith(
        "10 DataLoader workers beside torch's 1 thread on 2 usable cores")
    env = {"threads": 2, "cpus": 2, "data_loaders": [{"num_workers": 1}]}  # (near miss)
    assert _own_processes({"environment": env}).endswith(
        "1 DataLoader worker beside torch's 2 threads on 2 usable cores")

"""Rule ``long-step``: a single step many times the median (one evaluation, one checkpoint)."""

from __future__ import annotations

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.periodic_steps import periodic_steps
from torchdoctor.analyze.advice.single_long_step import single_long_step


def _run(long=(40,), wall=500.0, phase="other", calls=None, steps=60, **extra):
    """``steps`` light steps of 100 ms; those in ``long`` take ``wall`` ms, the extra in
    ``phase``; ``calls``: (model calls, eval calls) of each long step (1 call elsewhere)."""
    out = []
    for i in range(steps):
        record = {"index": i, "wall_ms": 100.0, "detailed": False, "phases": {"other": 10.0},
                  "model_calls": 1}  # fmt: skip
        if i in long:
            record.update(wall_ms=wall, phases={"other": 10.0, phase: wall - 90.0}, **extra)
            if calls is not None:
                record.update(model_calls=calls[0], eval_calls=calls[1])
        out.append(record)
    return {"steps": out}


def test_one_evaluation_is_told_with_its_model_calls():
    (item,) = single_long_step(_run(calls=(201, 200)))
    assert item.title == ("Step 40 of 60 took 5.0x the median: an evaluation between steps "
                          "(200 model calls in eval mode, against 1 in a typical step) is 6% of "
                          "the run")  # fmt: skip
    assert item.rule == "long-step" and item.confidence == "low"
    assert "torch.inference_mode()" in item.fix and "larger" in item.fix
    assert item.estimated_saving_ms == (400.0 / 60) / 2


def test_a_long_step_without_model_calls_is_work_between_steps():
    (item,) = single_long_step(_run())
    assert item.title.endswith("the median: work between steps is 6% of the run")
    assert "If it runs once" in item.fix and "checkpoint" in item.fix


def test_a_long_step_calling_the_model_in_training_mode_says_so():
    (item,) = single_long_step(_run(calls=(9, 0)))
    assert "work between steps" in item.title
    assert any("called the model 9 times against 1" in e for e in item.evidence)
    # (a diffusion pipeline sampling between epochs in training mode: eval mode, no_grad)
    assert "model in eval mode under torch.no_grad()" in item.fix
    assert "eval mode" not in single_long_step(_run())[0].fix  # (no model calls: no such fix)


def test_an_evaluation_is_told_to_run_less_often_first():
    """mnist's test() already runs under no_grad at batch 1000: fewer or rarer evaluations
    are what saves; inference_mode applies only with autograd on."""
    (item,) = single_long_step(_run(calls=(201, 200)))
    assert item.fix.index("less often") < item.fix.index("inference_mode")
    assert "if it runs with autograd on" in item.fix


def test_below_four_times_the_median_or_five_percent_of_the_run_it_is_silent():
    assert single_long_step(_run(wall=390.0)) == []  # 3.9x
    assert single_long_step(_run(wall=500.0, steps=200)) == []  # 400 ms of 20,400: 2%


def test_an_evaluation_its_model_calls_name_needs_neither_4x_nor_ten_light_steps():
    """DETR, 2 epochs of 7-8 steps: its epoch-end evaluate() (4 model calls in eval mode, 2 in
    a typical step) took 3.3x the median, 13% of the run, and was told nowhere."""
    (item,) = single_long_step(_run(long=(6,), wall=330.0, calls=(5, 4), steps=15))
    assert item.title.startswith("Step 6 of 15 took 3.3x the median: an evaluation")
    assert single_long_step(_run(long=(6,), wall=330.0, steps=15)) == []  # (no eval calls)
    assert single_long_step(_run(long=(3,), wall=330.0, calls=(5, 4), steps=4)) == []  # (4)


def test_two_long_steps_are_the_periodic_rule_s_not_this_one():
    session = _run(long=(19, 39), calls=(201, 200))
    assert single_long_step(session) == []
    (periodic,) = periodic_steps(session)
    assert periodic.title.startswith("Every 20 steps a step takes 5.0x the median: periodic "
                                     "evaluation between steps (200 model calls in eval mode "
                                     "per long step, against 1 in a typical step)")  # fmt: skip


def test_a_long_data_phase_is_left_to_the_data_loading_rule():
    assert single_long_step(_run(phase="data")) == []


def test_a_long_step_waiting_for_a_core_is_told_as_a_busy_machine():
    session = _run(cpu_ms=110.0, cpu_wait_ms=380.0)
    for step in session["steps"]:
        step.setdefault("cpu_ms", 99.0)
        step.setdefault("cpu_wait_ms", 0.5)
    (item,) = single_long_step(session)
    assert item.cause == "cpu-contention" and "the machine was busy" in item.title


def test_advise_ranks_it_once():
    found = [a for a in advise(_run(calls=(201, 200))) if a.cause == "periodic-work"]
    assert [a.rule for a in found] == ["long-step"]


def test_an_evaluation_whose_extra_time_is_its_own_loader_is_told_as_an_evaluation():
    """pytorch/examples' mnist_rnn: test() every 100 steps over a loader without workers: the
    long steps' extra time is mostly in the data phase (the test batches), which alone is the
    data-loading rule's; with their model calls in eval mode it is the evaluation."""
    periodic = _run(long=(19, 39, 59), phase="data", calls=(81, 80), steps=80)
    (item,) = periodic_steps(periodic)
    assert "periodic evaluation between steps (80 model calls in eval mode" in item.title
    (one,) = single_long_step(_run(phase="data", calls=(81, 80)))
    assert "an evaluation between steps" in one.title
    assert periodic_steps(_run(long=(19, 39, 59), phase="data", steps=80)) == []  # (no calls)


def test_an_evaluation_in_the_first_steps_is_no_warm_up_residue():
    """minGPT's trainer evaluates at iteration 0: profiled step 0 took 3.3 s (300 model calls
    in eval mode), a third of the run, and only a note said so."""
    session = _run(long=(0,), wall=3000.0, calls=(301, 300))
    (item,) = single_long_step(session)
    assert item.title.startswith("Step 0 of 60 took") and "an evaluation" in item.title
    assert single_long_step(_run(long=(1,), wall=3000.0)) == []  # (warm-up residue: left out)
    detailed = _run(long=(0,), wall=3000.0, calls=(301, 300))
    detailed["steps"][0]["detailed"] = True
    detailed["config"] = {"detail": {"outlier_steps": [0]}}
    assert single_long_step(detailed)


def test_a_loop_over_its_own_loader_in_training_mode_is_told_with_its_data_loading():
    """dlrm's test loop: the model in training mode with autograd on (no eval(), no no_grad),
    its batches made by a per-sample numpy dataset: the step's extra time is in its data
    phase, which was left to the data-loading rule, and nobody told the 23 s step."""
    (item,) = single_long_step(_run(wall=1500.0, phase="data", calls=(61, 0)))
    assert item.title.startswith("Step 40 of 60 took 15.0x the median: work between steps")
    assert any("1,410 ms of its extra time is data loading inside it" in e for e in item.evidence)
    assert "Most of its time is making its batches" in item.fix
    assert single_long_step(_run(wall=1500.0, phase="data", calls=(2, 0))) == []  # (restarts)
    session = _run(long=(10, 30, 50), wall=1500.0, phase="data", calls=(61, 0))
    (periodic,) = periodic_steps(session)
    assert periodic.title.startswith("Every 20 steps a step takes 15.0x the median")

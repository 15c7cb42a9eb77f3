"""Rule periodic-steps: rare long steps (an evaluation every N steps) found among every step's
recorded wall time and phases, light steps included."""

from __future__ import annotations

import pytest

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.periodic_steps import periodic_steps


def _steps(n=60, every=20, long_ms=300.0, phase="other", detailed=(), base=100.0):
    out = []
    for i in range(n):
        extra = long_ms if every and i % every == every - 1 else 0.0
        phases = {"data": 1.0, "forward": 0.0, "backward": 40.0, "optimizer": 2.0, "other": 57.0}
        phases[phase] += extra
        out.append({"index": i, "wall_ms": base + extra, "phases": phases,
                    "detailed": i in detailed})  # fmt: skip
    return out


def test_an_evaluation_every_20_steps_is_found_with_its_measured_cost():
    """The Hugging Face Trainer with eval_steps=20 (BERT, CPU): steps 19 and 39 took 351 and
    384 ms against an 88 ms median, all of it between steps."""
    (item,) = periodic_steps({"steps": _steps()})
    assert item.title == (
        "Every 20 steps a step takes 4.0x the median: periodic work between steps is 13% of the run"
    )
    assert item.evidence[0].startswith("steps 19, 39, 59 (of 60)")
    extra = 3 * 300.0
    assert item.saving_range_ms == pytest.approx((extra / 60 / 2, extra / 60))
    assert "+300 ms per long step" in item.evidence[1] and "an evaluation" in item.evidence[1]
    assert item.cause == "periodic-work"


def test_detailed_steps_are_left_out_and_irregular_long_steps_still_count():
    # detailed steps are slower (hooks): 3 of them at 2.5x are no periodic work
    steps = _steps(every=0)
    for s in steps[:3]:
        s.update(wall_ms=250.0, detailed=True)
    assert periodic_steps({"steps": steps}) == []
    # three long steps at irregular places: counted, without a period
    for i in (7, 30, 40):
        steps[i]["wall_ms"] += 400.0
        steps[i]["phases"]["other"] += 400.0
    (item,) = periodic_steps({"steps": steps})
    assert item.title.startswith("3 of 60 steps take 5.0x the median: work between steps")


@pytest.mark.parametrize(
    "steps, why",
    [
        (_steps(every=3), "a third of the steps: the step itself, not periodic work"),
        (_steps(long_ms=50.0), "under 2x the median"),
        (_steps(n=60, every=20, long_ms=300.0, phase="data"), "the data-loading rule's"),
        (_steps(n=8, every=3), "too few steps to tell"),
        (_steps(n=400, every=200, long_ms=150.0), "under 3% of the run"),
    ],
)
def test_no_advice_when_the_long_steps_are_not_rare_periodic_work(steps, why):
    assert periodic_steps({"steps": steps}) == [], why


def test_a_one_shot_run_has_no_periodic_steps_and_the_rule_is_registered():
    session = {"steps": _steps(), "config": {"step_boundary": "whole_run"}}
    assert periodic_steps(session) == []
    session["config"] = {}
    assert [a.rule for a in advise(session)] == ["periodic-steps"]


def test_a_long_detailed_step_counts_and_two_far_longer_steps_are_enough():
    """Lightning with val_check_interval=50 and 64 batches per epoch validates at steps 49 and
    113: no common period; step 113 fell in a detail window (left out of the tree)."""
    steps = _steps(n=149, every=0, base=48.0)
    for i, extra in ((49, 311.0), (113, 376.0)):
        steps[i]["wall_ms"] += extra
        steps[i]["phases"]["other"] += extra
    steps[113].update(detailed=True)
    steps[113]["phases"].update(forward=25.0, other=steps[113]["phases"]["other"] - 25.0)
    session = {"steps": steps, "config": {"detail": {"outlier_steps": [113]}}}
    (item,) = periodic_steps(session)
    assert item.title.startswith("2 of 149 steps take 7.5x the median: work between steps")  # (the light one)
    assert "+344 ms per long step" in item.evidence[1]  # (its forward counted as light's)
    assert "detailed step 113 was one" in item.evidence[2]
    for i in (49, 113):  # two steps only 3x the median, at no common period: nothing said
        steps[i]["wall_ms"] = 150.0
    assert periodic_steps(session) == []


def test_the_evaluations_line_is_named_when_a_detailed_step_was_long():
    """Lightning's validation at step 113 fell in a detail window: its model calls, made under
    validation_step's line, are the long step's extra time (the script's trainer.fit line
    holds them too, and is not the one named)."""
    steps = _steps(n=149, every=0, base=48.0)
    for i in (49, 113):
        steps[i]["wall_ms"] += 330.0
        steps[i]["phases"]["other"] += 330.0
    steps[113]["detailed"] = True
    calls = [
        {"location": "train_pl.py:41", "function": "<module>", "code": "trainer.fit(...)",
         "extra_ms": 272.2},
        {"location": "train_pl.py:30", "function": "validation_step",
         "code": 'self.log("val_loss", F.cross_entropy(self(x), y))', "extra_ms": 274.6},
    ]  # fmt: skip
    session = {"steps": steps, "config": {"detail": {"outlier_steps": [113]}},
               "long_step_calls": calls}  # fmt: skip
    (item,) = periodic_steps(session)
    assert item.evidence[2] == (
        "in detailed step 113, the model calls under train_pl.py:30 `self.log(\"val_loss\", "
        "F.cross_entropy(self(x), y))` took 275 ms more than in a typical step"
    )


def test_work_spilling_into_the_next_step_keeps_the_period():
    """stable-baselines3's PPO: a rollout every 32 steps; once, the step after one was long too
    (13.5 ms over a 2.7 ms median). It was '8 of 255 steps take 114x the median'."""
    steps = _steps(n=160, every=32, long_ms=300.0)
    steps[96]["wall_ms"] += 400.0
    steps[96]["phases"]["other"] += 400.0
    (item,) = periodic_steps({"steps": steps})
    assert item.title.startswith("Every 32 steps a step takes")


def test_long_steps_of_an_inference_loop_on_a_longer_input_are_the_models_own_work():
    """A decoder's prompt steps (12 tokens against one a step): no saving from running the
    'periodic work' less often; one long step left unexplained keeps the general advice."""
    steps = _steps(phase="forward")
    for s in steps:
        s["input_shape"] = [1, 12] if s["index"] % 20 == 19 else [1, 1]
    (item,) = periodic_steps({"steps": steps})
    assert item.title == (
        "Every 20 steps a step takes 4.0x the median: longer inputs ([1, 12] against [1, 1]), "
        "13% of the run"
    )
    assert item.estimated_saving_ms is None and "prefill several prompts" in item.fix
    assert any("a prompt's first pass" in e for e in item.evidence)
    steps[59]["input_shape"] = [1, 1]  # (this one's time is something else)
    (item,) = periodic_steps({"steps": steps})
    assert item.title.endswith(": longer inputs ([1, 12] against [1, 1])")
    assert item.estimated_saving_ms is not None and "an evaluation" in item.fix
    # (the model's own work first, for the steps it explains: Whisper's encoder, 11 of 36)
    assert item.fix.startswith("Some of these steps run more of the model")
    assert "For the others: if it is an evaluation" in item.fix


def test_the_step_after_an_encoders_call_is_the_models_own_work_too():
    """T5's generate(): the step that calls the encoder, then the decoder's first step on its
    output (cross-attention keys and values over the new input), both long, every 40 steps."""
    steps = _steps(n=120, every=0, phase="forward")
    for first in (39, 79, 119):
        for index in (first - 1, first):
            steps[index]["wall_ms"] += 300.0
            steps[index]["phases"]["forward"] += 300.0
        steps[first - 1]["outer_modules"] = ["T5ForConditionalGeneration", "encoder"]
    session = {"steps": steps, "config": {"outer_modules": ["T5ForConditionalGeneration"]}}
    (item,) = periodic_steps(session)
    assert item.title.startswith("Every 40 steps a step takes 4.0x the median: encoder's calls")
    assert any("come right after one of those" in e for e in item.evidence)
    assert item.estimated_saving_ms is None and "not work between steps" in item.fix


def test_an_inference_loop_s_input_preparation_before_its_encoder_is_named():
    """Whisper's generate() per batch of clips: each encoder step also ran the feature
    extractor before the model was called (the other phase, a third of the long steps' extra
    time), which the evidence and the fix name; the model's share is "its own calls"."""
    steps = _steps(n=120, every=0, phase="forward")
    for first in (39, 79, 119):
        steps[first - 1]["wall_ms"] += 450.0
        steps[first - 1]["phases"]["forward"] += 300.0
        steps[first - 1]["phases"]["other"] = steps[first - 1]["phases"].get("other", 0.0) + 150.0
        steps[first - 1]["outer_modules"] = ["WhisperForConditionalGeneration", "model.encoder"]
    session = {"steps": steps, "config": {"outer_modules": ["WhisperForConditionalGeneration"],
                                          "step_boundary": "module"}}  # fmt: skip
    (item,) = periodic_steps(session)
    assert any("is in the model's own calls" in e for e in item.evidence)
    assert any("450 ms over the run (33% of the long steps' extra time) ran outside the model"
               in e for e in item.evidence)  # fmt: skip
    assert "a DataLoader with workers, or a background thread" in item.fix


def test_an_evaluation_loop_without_no_grad_is_the_periodic_works_cause():
    """validate() every 20 steps, its loop (TD602, lines 9-11) without no_grad: the long
    steps' model calls ran under its line 10. One advice, the lint finding's line and cure
    shown first; it was a second advice "TD602 in unattributed code" ranked third."""
    steps = _steps(n=149, every=20, base=48.0)
    steps[59]["detailed"] = True
    calls = [{"file": "/w/train.py", "line": 10, "location": "train.py:10",
              "function": "validate", "code": "logits = model(x)", "extra_ms": 290.0}]
    finding = {"code": "TD602", "severity": "warning", "path": "/w/train.py", "line": 9,
               "end_line": 11, "message": "evaluation loop runs with autograd on: wrap it in "
               "`with torch.inference_mode():`"}  # fmt: skip
    session = {"steps": steps, "config": {"detail": {"outlier_steps": [59]}},
               "long_step_calls": calls, "lint": [finding]}  # fmt: skip
    items = [a for a in advise(session) if "TD602" in a.references]
    (item,) = items
    assert item.rule == "periodic-steps" and item.title.startswith("Every 20 steps")
    assert item.evidence[2].startswith("train.py:9: TD602 evaluation loop runs with autograd")
    assert "took 290 ms more in each long step" in item.evidence[2]
    assert item.fix.startswith("At train.py:9: evaluation loop runs with autograd on")


def test_a_validation_every_5_steps_is_periodic_work_though_18_percent_of_the_steps():
    """Lightning with val_check_interval=10 and accumulate_grad_batches=2: 7 of 39 steps at
    34-64 ms against a 7.5 ms median, 45% of the run, got no advice (over the 15% cap)."""
    (item,) = periodic_steps({"steps": _steps(n=40, every=5, long_ms=300.0)})
    assert item.title.startswith("Every 5 steps a step takes 4.0x the median")
    assert periodic_steps({"steps": _steps(n=40, every=3, long_ms=300.0)}) == []  # (the loop)


def test_a_hand_written_update_s_phase_is_told_as_after_the_backward_pass():
    """word_language_model (no optimizer: steps end at backward calls) evaluates at each
    epoch's end: that time fell in the 'optimizer' phase and was told as 'a scheduler, an extra
    optimizer pass'; a long run's steps are counted as the kept sample of all of them."""
    session = {"steps": _steps(phase="optimizer"),
               "config": {"step_boundary": "backward", "step_records": {"seen": 1029}}}  # fmt: skip
    (item,) = periodic_steps(session)
    assert "periodic work after the backward pass" in item.title
    assert "a hand-written update" in item.evidence[1] and "scheduler" not in item.evidence[1]
    assert "(of 60 kept of 1,029)" in item.evidence[0]


def test_a_rollout_in_eval_mode_is_told_as_collecting_experience_not_an_evaluation():
    """stable-baselines3's PPO puts its policy in eval mode to collect experience: the long
    steps' 2048 one-observation calls are the training data, not an evaluation to shrink."""
    rows = [
        {"location": "train.py:12", "code": "model.learn(total_timesteps=12_000)", "calls_per_step": 2048.0,
         "typical_calls": 0.0, "one_sample_share": 1.0, "samples_per_call": 1.0, "eval_share": 1.0,
         "extra_ms": 2200.0, "ms_per_step": 2200.0, "typical_ms": 0.0},
        {"location": "on_policy_algorithm.py:170", "function": "collect_rollouts",
         "package": "stable_baselines3", "extra_ms": 2150.0, "ms_per_step": 2150.0, "typical_ms": 0.0},
    ]  # fmt: skip
    session = {"steps": _steps(every=20, long_ms=2000.0), "long_step_calls": rows}
    (item,) = periodic_steps(session)
    assert "a rollout collecting experience: collect_rollouts (on_policy_algorithm.py:170)" in item.title
    assert "evaluation" not in item.title and "evaluation" not in item.fix
    assert "n_envs" in item.fix and "keep its size" in item.fix
    rows[1]["function"] = "evaluate_policy"  # an evaluation in eval mode stays one
    (item,) = periodic_steps(session)
    assert "(an evaluation: the model in eval mode)" in item.title


def test_long_steps_of_very_different_lengths_are_told_as_a_range():
    """stable-baselines3: a 9.5 ms hiccup beside a 613 ms rollout read '2 of 639 steps take
    176.8x the median', the median of the two, true of neither."""
    steps = _steps(every=0)
    steps[21]["wall_ms"] += 150.0
    steps[21]["phases"]["other"] += 150.0
    steps[43]["wall_ms"] += 5000.0
    steps[43]["phases"]["other"] += 5000.0
    (item,) = periodic_steps({"steps": steps})
    assert item.title.startswith("Every 22 steps a step takes 2.5x to 51x the median")


def test_decoding_steps_without_a_cache_are_no_periodic_work():
    """A cached generate() then one with use_cache=False: the uncached steps, each on a longer
    input, read as 'a prompt's first pass' periodic work beside the KV-cache advice."""
    cached = [{"index": i, "wall_ms": 10.0, "detailed": False, "input_shape": [1, 1],
               "phases": {"forward": 9.0, "other": 1.0}} for i in range(100)]  # fmt: skip
    grown = [{"index": 100 + i, "wall_ms": 40.0 + i, "detailed": False, "input_shape": [1, 20 + i],
              "phases": {"forward": 39.0 + i, "other": 1.0}} for i in range(12)]  # fmt: skip
    session = {"steps": cached + grown, "config": {"step_boundary": "module"}}
    assert periodic_steps(session) == []
    session["config"]["step_boundary"] = "optimizer"  # (not a decode: the steps stay long)
    assert periodic_steps(session)


def test_a_detailed_rollout_counts_at_the_light_rollouts_length():
    """cleanrl's PPO: a rollout of 1,024 policy calls every 32 updates; the one that fell in a
    detail window took 1,801 ms against 440 ms light (a hook on every small call), which made
    the rollouts 61% of the run instead of about 40%."""
    steps = _steps(n=128, every=32, long_ms=438.0, base=2.0)
    steps[63].update(detailed=True, wall_ms=1801.0)
    steps[63]["phases"]["other"] = 1801.0 - 43.0
    (item,) = periodic_steps({"steps": steps, "config": {"detail": {"outlier_steps": [63]}}})
    light = _steps(n=128, every=32, long_ms=438.0, base=2.0)
    (as_if_light,) = periodic_steps({"steps": light})
    assert item.title == as_if_light.title  # (the share of the run as without the hooks)
    assert item.saving_range_ms == pytest.approx(as_if_light.saving_range_ms, rel=0.01)  # (127 light)


def test_the_step_numbers_say_they_count_after_the_warm_up():
    """build-nanogpt evaluates at its steps 20 and 39; the report, counting after one warm-up
    step, said 19 and 38 with no word of how it counts."""
    (item,) = periodic_steps({"steps": _steps(), "config": {"warmup": 1}})
    assert item.evidence[0].endswith("; steps are numbered from 0 after 1 warm-up step")
    (plain,) = periodic_steps({"steps": _steps(), "config": {"warmup": 0}})
    assert "warm-up" not in plain.evidence[0]


def test_a_second_phase_holding_part_of_the_extra_time_is_named_too():
    """Whisper's transcription loop: each long step runs the encoder (forward, +180 ms) and the
    feature extractor on the next clips (between steps, +120 ms); the first alone was told."""
    steps = _steps(long_ms=180.0, phase="forward")
    for s in steps:
        if s["wall_ms"] > 150:
            s["phases"]["other"] += 120.0
            s["wall_ms"] += 120.0
    (item,) = periodic_steps({"steps": steps})
    assert "+180 ms per long step; and +120 ms between steps" in item.evidence[1], item.evidence
    (alone,) = periodic_steps({"steps": _steps(long_ms=300.0, phase="forward")})
    assert "; and" not in alone.evidence[1]


def test_a_long_detailed_step_kept_in_the_tree_is_named_and_the_first_light_steps_count():
    """odd2's r_weakref_gc: gc.collect() every 5 steps, a detail window at steps 0-4 and an
    aimed step, both long and kept in the tree (too many to leave out), read "no detailed step
    was one"; and a long step among the first two light ones (not the run's first two) was
    dropped as warm-up residue."""
    def steps(detailed):
        out = _steps(n=40, every=5, long_ms=70.0, base=1.0, detailed=detailed)
        for s in out:
            s["phases"] = {"forward": 0.3, "backward": 0.3, "optimizer": 0.1,
                           "other": s["wall_ms"] - 0.7}  # fmt: skip
        return out

    (item,) = periodic_steps({"steps": steps((0, 1, 2, 3, 4, 24))})
    assert item.evidence[0].startswith("steps 9, 14, 19, 29, 34, 39 (of 40)")
    assert "detailed steps 4, 24 were one, kept in the tree" in item.evidence[2]
    assert "no detailed step was one" not in " ".join(item.evidence)
    (near,) = periodic_steps({"steps": steps((0, 1, 2))})  # (no detailed step long)
    assert near.evidence[0].startswith("steps 4, 9, 14,")  # (step 4: the second light one)
    assert "no detailed step was one" in near.evidence[2]

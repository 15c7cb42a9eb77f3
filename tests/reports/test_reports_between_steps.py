"""The "Between steps" section in every report format: present with sampled lines, absent
without them."""

import pytest
from reports_sessions import between_steps_session, python_lines_session, s, slow_session

from torchdoctor.render.console import render_console
from torchdoctor.render.html import render_html
from torchdoctor.render.markdown import render_markdown
from torchdoctor.session_read import center


def test_sampled_lines_show_in_every_format():
    session = between_steps_session()
    console = render_console(session, width=140)
    assert "Between steps" in console and "train.py:90" in console
    markdown = render_markdown(session)
    assert "## Between steps" in markdown
    assert "| train.py:90 | 35 |" in markdown and "torch.save(model.state_dict(), p)" in markdown
    assert '<section id="between-steps">' in render_html(session)


def test_source_text_in_the_console_is_not_taken_for_rich_markup():
    """``[int(i)]`` in a sampled line is source, not a style tag: the console shows it whole."""
    session = between_steps_session()
    code = "vals = [table[int(i) % 10] for i in range(30000)]"
    session["other_lines"][0]["code"] = code
    assert code in render_console(session, width=160)


def test_no_sampled_lines_no_section():
    session = slow_session()
    assert "Between steps" not in render_console(session, width=140)
    assert "## Between steps" not in render_markdown(session)
    assert "between-steps" not in render_html(session)


def test_python_outside_torch_shows_in_every_format_and_is_advised_by_what_it_calls():
    from torchdoctor.analyze.advice import advise

    session = python_lines_session("obs, reward, done, trunc, info = env.step(action)")
    assert "Python outside torch" in render_console(session, width=140)
    assert "| rl.py:41 |" in render_markdown(session).split("## Python outside torch")[1]
    assert '<section id="python-outside-torch">' in render_html(session)
    [advice] = [a for a in advise(session) if a.rule == "python-outside-torch"]
    assert advice.title.endswith("an environment stepped one at a time")
    assert "AsyncVectorEnv" in advice.fix
    assert any("cartpole.py:172" in e for e in advice.evidence)
    tokens = python_lines_session("ids = tokenizer(texts, return_tensors='pt')")
    [advice] = [a for a in advise(tokens) if a.rule == "python-outside-torch"]
    assert "Tokenize in the Dataset" in advice.fix


def test_a_line_the_hot_lines_explain_is_not_advised_twice():
    from torchdoctor.analyze.advice import advise

    step = center(slow_session()["step_ms"])  # (the line: 0.4 of it)
    explained = python_lines_session("x = torch.stack(items)", hot_ms=0.3 * step)
    assert not [a for a in advise(explained) if a.rule == "python-outside-torch"]


def test_an_unfused_optimizer_taking_a_share_of_the_step_is_told_fused_with_a_measured_saving():
    from reports_sessions import optimizer_session

    from torchdoctor.analyze.advice import SPEEDUPS, advise

    session = optimizer_session()
    [advice] = [a for a in advise(session) if a.rule == "optimizer-step"]
    assert "fused=True" in advice.title and "AdamW" in advice.title
    phase = 30.0
    low, high = advice.saving_range_ms
    speedup = SPEEDUPS["fused_optimizer"]
    assert low == pytest.approx(phase * (1 - 1 / speedup.low))
    assert high == pytest.approx(phase * (1 - 1 / speedup.high))
    assert not [a for a in advise(optimizer_session(fused=True)) if a.rule == "optimizer-step"]
    [on_gpu] = [a for a in advise(optimizer_session(device="cuda:0 H200"))
                if a.rule == "optimizer-step"]  # fmt: skip
    assert on_gpu.estimated_saving_ms is None and "torchdoctor tune" in " ".join(on_gpu.evidence)
    tuned = optimizer_session()
    tuned["tune"] = {"rows": [{"knob": "fused_optimizer", "status": "measured"}]}
    assert not [a for a in advise(tuned) if a.rule == "optimizer-step"]  # the tune measured it


def test_the_fused_saving_is_the_one_measured_for_the_optimizers_class():
    """pytorch/examples imagenet (SGD, momentum 0.9) was told AdamW's measured speedup; SGD
    without momentum gains nothing from fused=True (its update is one add: 0.98-1.09x)."""
    from reports_sessions import optimizer_session

    from torchdoctor.analyze.advice import SPEEDUPS, advise

    def told(**settings):
        session = optimizer_session()
        session["environment"]["optimizers"][0].update(settings)
        return [a for a in advise(session) if a.rule == "optimizer-step"]

    [sgd] = told(type="SGD", momentum=0.9)
    speedup = SPEEDUPS["fused_sgd_momentum"]
    assert sgd.saving_range_ms[0] == pytest.approx(30.0 * (1 - 1 / speedup.low))
    assert any("SGD step with momentum" in e for e in sgd.evidence)
    assert not told(type="SGD", momentum=0.0)
    [adagrad] = told(type="Adagrad")
    assert any("Adagrad step" in e for e in adagrad.evidence)
    [old] = told(type="SGD")  # (a session from before momentum was noted: as with momentum)
    assert old.saving_range_ms == sgd.saving_range_ms
    # stable-baselines3's SAC: Adam over a tiny agent's networks gains 2.3-2.4x fused, not the
    # 3.4-4.9x of 2.6M parameters and more (1.36 ms stated, 0.5-0.8 ms measured before)
    [tiny] = told(type="Adam", numel=134_658)
    assert tiny.saving_range_ms[1] == pytest.approx(30.0 * (1 - 1 / SPEEDUPS["fused_adam_small"].high))
    assert any("critics" in e for e in tiny.evidence)
    [large] = told(type="Adam", numel=2_000_000)
    assert large.saving_range_ms[0] == pytest.approx(30.0 * (1 - 1 / SPEEDUPS["fused_adam"].low))


@pytest.mark.parametrize(("driver", "kind", "says"), [
    (None, "AdamW", "where the script builds the optimizer"),
    ("transformers", "AdamW", 'optim="adamw_torch_fused"'),
    ("transformers", "SGD", "optimizers=(torch.optim.SGD("),
    ("lightning", "Adam", "configure_optimizers"),
])  # fmt: skip
def test_the_fused_fix_says_where_the_loop_that_steps_the_optimizer_takes_it(driver, kind, says):
    """The Trainer builds its optimizer from TrainingArguments, Lightning from the module; a
    script's own loop from its own line: the fix names that place only."""
    from reports_sessions import optimizer_session

    from torchdoctor.analyze.advice import advise

    session = optimizer_session()
    for optimizer in session["environment"]["optimizers"]:
        optimizer.update(driver=driver, type=kind)
    [advice] = [a for a in advise(session) if a.rule == "optimizer-step"]
    assert says in advice.fix + advice.code
    others = {"Trainer", "TrainingArguments", "Lightning", "configure_optimizers", "nanoGPT"}
    named = {word for word in others if word in advice.fix}
    assert named <= {None: set(), "transformers": {"Trainer", "TrainingArguments"},
                     "lightning": {"Lightning", "configure_optimizers"}}[driver]  # fmt: skip


def test_checkpointing_names_the_layers_whose_parts_are_re_run():
    """Hugging Face's GradientCheckpointingLayer re-runs a layer's parts, not the layer."""
    from torchdoctor.analyze.advice.checkpointing import activation_checkpointing

    def part(path):
        return {"kind": "module", "path": path, "forward_ms": {"mean": 2.0},
                "backward_ms": {"mean": 5.0}, "recomputed_ms": {"mean": 2.0}, "children": []}  # fmt: skip

    layers = [{"kind": "module", "path": f"model.layers.{i}", "forward_ms": {"mean": 4.0},
               "backward_ms": {"mean": 10.0},
               "children": [part(f"model.layers.{i}.attn"), part(f"model.layers.{i}.mlp")]}
              for i in range(2)]  # fmt: skip
    tree = {"kind": "root", "path": "", "children": layers}
    [advice] = activation_checkpointing({"step_ms": {"mean": 40.0}, "tree": tree})
    assert "4 checkpointed part(s) (parts of model.layers.0, model.layers.1)" in advice.evidence[0]
    assert advice.saving_range_ms == [4.0, 8.0]


def test_a_library_loops_lines_show_under_the_users_line():
    from reports_sessions import library_loop_session

    session = library_loop_session()
    console = render_console(session, width=160)
    assert "train.py:20" in console and "trainer.py:1958" in console
    assert "self._maybe_log_save_evaluate(" in console
    markdown = render_markdown(session)
    assert "|   trainer.py:1958 | 20 |" in markdown


def test_a_generation_loop_is_not_called_a_training_loop():
    """Hugging Face ``model.generate`` in an inference script (steps cut at model calls): its
    own per-token Python is the generation loop's, between model calls, and the fix names the
    static cache, not gradient accumulation."""
    from reports_sessions import library_loop_session

    from torchdoctor.analyze.advice.library_loop import library_loop

    session = library_loop_session()
    session["config"]["step_boundary"] = "module"
    row = session["other_lines"][0]
    row["code"] = "out = model.generate(prompts, max_new_tokens=40)"
    row["inside"][0].update(file="/v/site-packages/transformers/utils/deprecation.py", line=173,
                            location="deprecation.py:173", function="wrapped_func",
                            code="return func(*args, **kwargs)")  # fmt: skip
    (item,) = library_loop(session)
    assert item.title.startswith("the transformers generation loop spends")
    assert "between one model call and the next" in item.evidence[0]
    assert "cache_implementation='static'" in item.fix and "accumulation" not in item.fix
    session["config"]["step_boundary"] = "optimizer"
    assert library_loop(session)[0].title.startswith("the transformers training loop")


def test_a_compiled_function_sampled_between_steps_is_its_kernels_not_work_to_do_less_often():
    """gpt-fast under --compile: the compiled decode_one_token runs outside any module call,
    its kernels sampled in the other phase through Inductor's output code."""
    from torchdoctor.analyze.advice.compiled_lines import COMPILED_FIX
    from torchdoctor.analyze.advice.other_phase import between_steps

    session = between_steps_session()
    generated = "/tmp/torchinductor_me/bn/cbnttj42shwl6flsk.py"
    session["other_lines"][0].update(
        code="def decode_one_token(model, x, input_pos, **sampling_kwargs):",
        via=[{"file": generated, "line": 1621, "function": "call", "ms_per_step": 30.0}],
    )
    (advice,) = between_steps(session)
    assert advice.title.endswith("code torch.compile generated, outside any module call")
    assert advice.fix == COMPILED_FIX and advice.estimated_saving_ms is None
    assert not any("every 10 steps" in e for e in advice.evidence)


def test_a_line_between_steps_whose_torch_calls_the_hot_lines_time_is_not_told_to_run_rarely():
    """cleanrl c51: the per-row `target_pmfs[i].index_add_(...)` loop after optimizer.step()
    was told "do it every 10 steps" (the target must be computed every step) while the hot
    lines timed its torch calls; the hot line's advice says what it is."""
    from reports_sessions import between_steps_session

    from torchdoctor.analyze.advice.other_phase import between_steps

    session = between_steps_session()
    row = session["other_lines"][0]
    row.update(code="target_pmfs[i].index_add_(0, l[i].long(), d_m_l[i])", line=226,
               file="/x/c51.py", location="c51.py:226")  # fmt: skip
    assert [a.title for a in between_steps(session)]  # (no hot line there: the generic item)
    session["hot_lines"] = {"steps": 5, "lines": [{
        "file": "/x/c51.py", "line": 226, "location": "c51.py:226", "code": row["code"],
        "forward_ms": {"mean": 30.0}, "backward_ms": {"mean": 0.0}, "total_ms": {"mean": 30.0},
        "calls_per_step": 128.0, "torch_calls_per_step": 384.0, "top_ops": []}]}  # fmt: skip
    assert between_steps(session) == []
    session["other_lines"][0]["code"] = "torch.save(model.state_dict(), p)"  # a checkpoint
    assert between_steps(session)  # (its own remedy stands)


def test_markdown_shows_source_verbatim_in_code_and_advice_code_as_code():
    """Code spans do not decode entities: `a &lt; b` and `\\*` showed literally; advice text
    with `code` in it was escaped into \\` and never rendered as code."""
    from torchdoctor.render.hot_lines import markdown_hot_lines

    code = "y = h[:, idx] * (h[:, idx] < 0.5) | mask"
    line = {"file": "/x/train.py", "line": 17, "location": "train.py:17", "function": "<module>",
            "code": code, "forward_ms": {"mean": 2.0}, "backward_ms": {"mean": 1.0},
            "total_ms": {"mean": 3.0}, "pct_of_step": 30.0, "calls_per_step": 1.0}  # fmt: skip
    text = "\n".join(markdown_hot_lines({"hot_lines": {"lines": [line]}, "step_ms": s(10.0)}))
    assert "`y = h[:, idx] * (h[:, idx] < 0.5) \\| mask`" in text
    session = between_steps_session()
    session["other_lines"][0]["code"] = "vals = [t[int(i)] for i in r if i < n]"
    markdown = render_markdown(session)
    assert "`vals = [t[int(i)] for i in r if i < n]`" in markdown
    assert "\\`" not in markdown  # (advice text keeps its code spans)


def test_a_line_calling_the_model_gets_no_python_outside_torch_advice():
    """nanoGPT: `logits, loss = model(X, Y)` read 'runs Python outside torch for 9% of the step'
    in 1 run of 3: a tick taken as the model's call returns carries the model's CPU time."""
    from torchdoctor.analyze.advice.other_phase import python_outside_torch

    session = python_lines_session("logits, loss = model(X, Y)")
    assert python_outside_torch(session)  # (a line like any other)
    session["call_lines"] = [{"file": "/w/rl.py", "line": 41, "modules": ["GPT"]}]
    assert python_outside_torch(session) == []


def test_a_line_sampled_in_few_detailed_steps_is_no_work_of_every_step():
    """DCGAN saves sample images at iteration 0 of an epoch; one save fell in the first detail
    window and, averaged over 11 detailed steps, read "a checkpoint written every step" with a
    high-confidence saving, ranked first. Sampled in 1 of 11 steps, it is periodic or one-off."""
    from torchdoctor.analyze.advice.other_phase import between_steps

    session = between_steps_session()
    session["other_lines"][0].update(steps_seen=1, steps_sampled=11)
    (item,) = between_steps(session)
    assert "every step" not in item.title and "in 1 of the 11 detailed steps only" in item.title
    assert item.estimated_saving_ms is None and item.confidence == "low"
    session["other_lines"][0].update(steps_seen=10)
    (every,) = between_steps(session)
    assert "a checkpoint written every step" in every.title and every.estimated_saving_ms
    # work of every step ticked now and then (a few ms each time it is seen: stable-baselines3's
    # DQN, 1.1 ms of its 4 ms steps seen in 15 of 75) is no lump
    row = {"file": "/x/dqn.py", "line": 7, "location": "dqn.py:7", "code": "model.learn(n)",
           "ms_per_step": 1.1, "steps_seen": 15, "steps_sampled": 75}  # fmt: skip
    (sparse,) = between_steps({"step_ms": {"median": 4.0}, "phases": {"other": {"median": 2.3}},
                               "other_lines": [row]})  # fmt: skip
    assert "in 15 of the 75" not in sparse.title and sparse.estimated_saving_ms


def test_a_figure_saved_every_step_is_told_to_plot_less_often_not_to_leave_the_loop():
    """time_sequence_prediction saves `predict%d.pdf` per step: its file name changes every
    step, so "move it out of the loop" did not fit; drawing every N steps does."""
    from reports_sessions import between_steps_session

    from torchdoctor.analyze.advice.other_phase import between_steps

    session = between_steps_session()
    session["other_lines"][0]["code"] = "plt.savefig('predict%d.pdf' % i)"
    (item,) = between_steps(session)
    assert "figure" in item.title
    assert "every 10 steps" in item.fix and "Move it out of the loop" not in item.fix


def test_the_training_steps_own_line_sampled_between_steps_is_not_told_to_run_rarely():
    """odd2's t_meta_lazy.py: `opt.zero_grad(); loss.backward(); opt.step()` sampled in the
    other phase (zero_grad and the step's bookkeeping) read "do it every 10 steps", which would
    stop the training; a line of other work next to it keeps the generic remedy."""
    from torchdoctor.analyze.advice.other_phase import between_steps

    session = between_steps_session()
    session["other_lines"][0]["code"] = "opt.zero_grad(); loss.backward(); opt.step()"
    (item,) = between_steps(session)
    assert item.title.endswith("the training step's own calls (zero_grad, and the bookkeeping "
                               "around backward and step)")  # fmt: skip
    assert item.estimated_saving_ms is None and item.confidence == "low"
    assert "every 10 steps" not in item.fix + " ".join(item.evidence)
    session["other_lines"][0]["code"] = "accelerator.backward(loss)"
    assert between_steps(session)[0].estimated_saving_ms is None
    session["other_lines"][0]["code"] = "stats = compute_stats(batch)"  # (near miss)
    (other,) = between_steps(session)
    assert "every 10 steps" in other.fix and other.estimated_saving_ms

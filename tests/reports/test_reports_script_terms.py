"""Advice in the terms of the script's own options (environment.script_options)."""

from __future__ import annotations

from reports_sessions import slow_session

from torchdoctor.analyze.advice import advise
from torchdoctor.analyze.advice.base import Advice
from torchdoctor.analyze.advice.script_terms import in_script_terms, option_phrase


def _option(dest, value, *, flags=None, switch=False, sets=None, given=False, **more):
    entry = {"flags": flags or [f"--{dest.replace('_', '-')}"], "dest": dest, "value": value,
             "given": given, "switch": switch, **more}
    if sets is not None:
        entry["sets"] = sets
    return entry


def _session_with(options, device="cpu"):
    session = slow_session()
    session["phases"]["data"] = {"median": 30.0, "mean": 30.0}
    session["environment"] = {
        "device": device, "cpus": 8, "script_options": options,
        "data_loaders": [{"num_workers": 0, "persistent_workers": False, "pin_memory": False,
                          "iterators": 1, "steps": 9}],
    }  # fmt: skip
    return session


def test_the_data_loading_fix_names_the_script_s_workers_option_with_its_value():
    """pytorch/examples' imagenet takes -j/--workers: its user turns that, not a line."""
    options = [_option("workers", 0, flags=["--workers"]), _option("lr", 0.1)]
    (data,) = [a for a in advise(_session_with(options)) if a.rule == "data-loading"]
    assert data.fix.startswith("This script's own option for it: `--workers` (0 in this run).")
    assert "--lr" not in data.fix
    (bare,) = [a for a in advise(_session_with([])) if a.rule == "data-loading"]
    assert "own option" not in bare.fix and bare.fix in data.fix


def test_a_switch_is_named_only_when_giving_it_turns_the_remedy_the_right_way():
    fix = "Compile it."
    def phrase(option, cause="torch.compile"):
        (item,) = in_script_terms({"environment": {"script_options": [option]}},
                                  [Advice(rule="r", title="t", fix=fix, cause=cause)])
        return item.fix.removesuffix(" " + fix) if item.fix != fix else None
    off = _option("compile", False, switch=True, sets=True)
    assert phrase(off) == "This script's own option for it: run with `--compile` (off in this run)."
    assert phrase({**off, "value": True}) is None  # already on: nothing to add
    either = _option("compile", False, flags=["--compile", "--no-compile"], switch=True,
                     sets="either")  # fmt: skip
    assert "run with `--compile` (off" in phrase(either)
    # a store_false switch (--no-cache): on already, nothing to say; given, leave it out
    inverse = _option("use_cache", True, flags=["--no-cache"], switch=True, sets=False)
    assert phrase(inverse, "kv-cache") is None
    assert phrase({**inverse, "value": False, "given": True}, "kv-cache") == (
        "This script's own option for it: leave out `--no-cache` (off in this run).")
    assert phrase({**inverse, "value": False}, "kv-cache") is None  # (not given: default off)
    # activation checkpointing wants it off: a --gradient-checkpointing given is to drop
    ckpt = _option("gradient_checkpointing", True, switch=True, sets=True, given=True)
    assert phrase(ckpt, "activation-checkpointing") == (
        "This script's own option for it: leave out `--gradient-checkpointing` (on in this run).")


def test_configurator_globals_are_named_with_their_value_form():
    """nanoGPT reads `--compile=False` into a global: the fix is `--compile=True`."""
    option = {"flags": ["--compile"], "dest": "compile", "value": False, "given": True,
              "switch": True, "form": "--name=value"}  # fmt: skip
    assert option_phrase(option, "on") == "run with `--compile=True` (False in this run)"
    assert option_phrase({**option, "value": True}, "on") is None
    dtype = {**option, "dest": "dtype", "flags": ["--dtype"], "value": "float32", "switch": False}
    assert option_phrase(dtype, "on") == "`--dtype=...` (float32 in this run)"


def test_dtype_is_an_autocast_option_on_a_gpu_only():
    """nanoGPT's --dtype picks autocast's dtype on CUDA; its CPU step runs no autocast at all."""
    options = [_option("dtype", "float32")]
    item = Advice(rule="engine-knobs", title="t", fix="Autocast.", cause="bf16-autocast")
    (cpu,) = in_script_terms({"environment": {"device": "cpu", "script_options": options}},
                             [item])  # fmt: skip
    assert cpu.fix == "Autocast."
    (gpu,) = in_script_terms({"environment": {"device": "cuda:0", "script_options": options}},
                             [Advice(rule="engine-knobs", title="t", fix="Autocast.",
                                     cause="bf16-autocast")])  # fmt: skip
    assert gpu.fix.startswith(
        "This script's own option for it: run with `--dtype bfloat16` (float32 in this run).")
    nanogpt = {**options[0], "form": "--name=value"}
    assert option_phrase(nanogpt, "on", "bfloat16") == "run with `--dtype=bfloat16` (float32 in this run)"
    assert option_phrase({**nanogpt, "value": "bfloat16"}, "on", "bfloat16") is None


def test_names_match_whole_options_not_parts_and_at_most_three_are_named():
    item = Advice(rule="periodic-steps", title="t", fix="Evaluate less often.",
                  cause="periodic-work")  # fmt: skip
    options = [_option("eval_interval", 50), _option("log_interval", 1), _option("save_every", 9),
               _option("print_freq", 10), _option("evaluation_model", "x"),
               _option("interval", 3)]  # fmt: skip
    (out,) = in_script_terms({"environment": {"script_options": options}}, [item])
    assert out.fix.startswith("This script's own options for it: `--eval-interval` (50 in this "
                              "run), `--log-interval` (1 in this run), `--save-every` (9 in this run).")
    assert "evaluation-model" not in out.fix and "`--interval`" not in out.fix
    assert in_script_terms({"environment": {"script_options": options}}, [out])[0].fix == out.fix


def test_a_hugging_face_script_is_told_bf16_not_fp16_and_its_bare_bool_flags():
    """HfArgumentParser's booleans are `--bf16` with an optional value (nargs="?", const=True)."""
    import argparse

    from torchdoctor.collect.script_options import script_options, watching_options

    parser = argparse.ArgumentParser()
    for name in ("bf16", "fp16", "torch_compile"):
        parser.add_argument(f"--{name}", type=lambda v: v == "True", nargs="?", const=True,
                            default=False)  # fmt: skip
    with watching_options():
        parser.parse_args(["--torch_compile"])
        options = script_options()
    assert [(o["switch"], o.get("sets"), o["value"]) for o in options] == [
        (True, True, False), (True, True, False), (True, True, True)]
    found = [Advice(rule="engine-knobs", title="t", fix="Autocast.", cause="bf16-autocast"),
             Advice(rule="engine-knobs", title="t", fix="Compile.", cause="torch.compile")]
    autocast, compiled = in_script_terms({"environment": {"script_options": options}}, found)
    assert autocast.fix == (
        "This script's own option for it: run with `--bf16` (off in this run). Autocast.")
    assert compiled.fix == "Compile."  # (given already)


def test_fused_attention_names_the_script_s_flash_switch():
    """llm.c's train_gpt2.py: `--flash 0` runs its hand-written attention."""
    options = [_option("flash", 0), _option("flash_dim", 64)]
    (item,) = in_script_terms({"environment": {"script_options": options}},
                              [Advice(rule="r", title="t", fix="Use SDPA.", cause="sdpa")])
    assert item.fix == "This script's own option for it: `--flash` (0 in this run). Use SDPA."

    # TRL's sft.py --attn_implementation eager was named with no value to give it
    hf = [_option("attn_implementation", "eager", flags=["--attn_implementation"])]
    (told,) = in_script_terms({"environment": {"script_options": hf}},
                              [Advice(rule="r", title="t", fix="Use SDPA.", cause="sdpa")])
    assert told.fix.startswith("This script's own option for it: run with "
                               "`--attn_implementation sdpa` (eager in this run).")


def test_the_first_option_of_a_destination_is_kept_and_pinning_is_named_on_a_gpu_only():
    """HfArgumentParser defines `--dataloader_pin_memory` then `--no_dataloader_pin_memory`."""
    import argparse

    from torchdoctor.collect.script_options import script_options, watching_options

    parser = argparse.ArgumentParser()
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--dataloader_pin_memory", type=bool, nargs="?", const=True, default=True)
    parser.add_argument("--no_dataloader_pin_memory", action="store_false",
                        dest="dataloader_pin_memory")  # fmt: skip
    with watching_options():
        parser.parse_args([])
        options = script_options()
    assert [o["flags"] for o in options] == [["--dataloader_num_workers"], ["--dataloader_pin_memory"]]
    def fix(device):
        item = Advice(rule="data-loading", title="t", fix="Workers.", cause="dataloader-workers")
        return in_script_terms({"environment": {"device": device, "script_options": options}},
                               [item])[0].fix  # fmt: skip
    assert fix("cpu") == (
        "This script's own option for it: `--dataloader_num_workers` (0 in this run). Workers.")
    assert "`--dataloader_pin_memory` (on in this run)" in fix("cuda:0")


def test_a_float16_switch_is_not_named_for_cpu_bf16_autocast():
    """facebookresearch/dino on a CPU: its `--use_fp16` (utils.bool_flag, off in the run) was
    named "the script's own option" for CPU bf16 autocast; given, the script enters
    torch.cuda.amp.autocast and a torch.cuda.amp.GradScaler, both disabled on a CPU: the step
    stays in float32. On a GPU it is the script's mixed precision, and is named."""
    options = [_option("use_fp16", False, flags=["--use_fp16"]), _option("lr", 5e-4)]
    def fix(device):
        item = Advice(rule="engine-knobs", title="t", fix="Autocast.", cause="bf16-autocast")
        return in_script_terms({"environment": {"device": device, "script_options": options}},
                               [item])[0].fix  # fmt: skip
    assert fix("cpu") == "Autocast."
    assert fix("cuda:0") == "This script's own option for it: `--use_fp16` (off in this run). Autocast."
    half = [_option("half", False, switch=True, sets=True)]
    item = Advice(rule="engine-knobs", title="t", fix="Autocast.", cause="bf16-autocast")
    assert in_script_terms({"environment": {"device": "cpu", "script_options": half}},
                           [item])[0].fix == "Autocast."  # fmt: skip


def test_periodic_work_found_to_be_an_evaluation_names_the_evaluation_options_alone():
    """nanoGPT's long steps are its evaluation: --eval_interval and --eval_iters, not
    --log_interval (which the same script also has)."""
    options = [_option("eval_interval", 40, form="--name=value"),
               _option("log_interval", 1, form="--name=value")]  # fmt: skip
    def fix(title):
        item = Advice(rule="periodic-steps", title=title, fix="Run it less often.",
                      cause="periodic-work")  # fmt: skip
        return in_script_terms({"environment": {"script_options": options}}, [item])[0].fix
    assert fix("40 model calls (an evaluation: the model in eval mode)").startswith(
        "This script's own option for it: `--eval-interval=...` (40 in this run). ")
    assert "`--log-interval=...` (1 in this run)" in fix("a long step every 40")


def test_a_sync_every_step_names_a_log_interval_of_one_only():
    """nanoGPT's `lossf = loss.item()` runs under `if iter_num % log_interval == 0`, at 1."""
    def fix(value):
        options = [_option("log_interval", value, form="--name=value")]
        item = Advice(rule="host-syncs", title="Keep per-step scalars on the device", fix="Defer.")
        return in_script_terms({"environment": {"script_options": options}}, [item])[0].fix
    assert fix(1) == ("This script's own option for it: `--log-interval=...` (1 in this run: "
                      "every step). Defer.")
    assert fix(10) == "Defer." and fix(True) == "Defer."


def test_respawning_workers_name_the_persistence_switch_not_the_worker_count():
    """No value of --workers keeps workers alive across epochs (clients round 11)."""
    options = [_option("workers", 4), _option("persistent_workers", False, switch=True, sets=True)]
    def fix(opts):
        item = Advice(rule="worker-respawn", title="t", fix="Keep them.", cause="dataloader-workers")
        return in_script_terms({"environment": {"script_options": opts}}, [item])[0].fix
    assert fix(options) == ("This script's own option for it: run with `--persistent-workers` "
                            "(off in this run). Keep them.")
    assert fix(options[:1]) == "Keep them."


def test_every_tune_command_told_carries_the_run_s_script_and_arguments():
    from torchdoctor.analyze.advice.tune_command import with_tune_command

    session = {"config": {"script_command": ["main.py", "--data", "d 1", "-j", "0"]}}
    items = [Advice("data-loading", "t", fix="Measure workers: torchdoctor tune --knobs "
                    "dataloader_workers SCRIPT.", evidence=["measure it (torchdoctor tune "
                    "--knobs dataloader_workers SCRIPT)"]),
             Advice("optimizer-step", "t", fix="`torchdoctor tune SCRIPT` measures it; SCRIPTS.")]
    data, optimizer = with_tune_command(session, items)
    assert data.fix == ("Measure workers: torchdoctor tune --knobs dataloader_workers main.py "
                        "--data 'd 1' -j 0.")
    assert data.evidence == ["measure it (torchdoctor tune --knobs dataloader_workers main.py "
                             "--data 'd 1' -j 0)"]
    assert optimizer.fix == "`torchdoctor tune main.py --data 'd 1' -j 0` measures it; SCRIPTS."
    bare = Advice("r", "t", fix="torchdoctor tune SCRIPT")
    assert with_tune_command({"label": "fit"}, [bare])[0].fix == "torchdoctor tune SCRIPT"


def test_a_training_arguments_field_in_a_fix_names_the_hf_script_s_option_of_that_name():
    """run_clm.py (HfArgumentParser): the library-syncs fix 'TrainingArguments(
    logging_nan_inf_filter=False)' missed `--logging_nan_inf_filter False`, on by default (an
    optional-value bool: giving the bare flag leaves it on)."""
    options = [_option("logging_nan_inf_filter", True, flags=["--logging_nan_inf_filter"],
                       switch=True, sets=True, nargs="?"),
               _option("logging_steps", 20, flags=["--logging_steps"])]  # fmt: skip
    fix = "TrainingArguments(logging_nan_inf_filter=False); the model's own mask checks..."
    item = Advice(rule="library-syncs", title="t", fix=fix)
    (out,) = in_script_terms({"environment": {"script_options": options}}, [item])
    assert out.fix == ("This script's own option for it: run with `--logging_nan_inf_filter "
                       "False` (on in this run). " + fix)  # fmt: skip
    assert option_phrase(options[0], "on") is None  # (on already)
    plain = _option("amp", True, switch=True, sets=True)  # (argparse store_true: no value)
    assert option_phrase(plain, "off") is None


def test_an_evaluation_names_no_print_interval_when_the_script_has_no_evaluation_option():
    """torchvision's classification reference evaluates once per epoch, with no option for it;
    its --print-freq (a log line every 5 batches) was named for the evaluation."""
    options = [_option("print_freq", 5), _option("epochs", 3)]
    item = Advice(rule="periodic-steps", title="periodic evaluation between steps (10 model calls "
                  "in eval mode per long step)", fix="Run it less often.", cause="periodic-work")
    (out,) = in_script_terms({"environment": {"script_options": options}}, [item])
    assert out.fix == "Run it less often."


def test_a_precision_option_is_told_the_bfloat16_value_it_takes():
    """lightning-hydra-template / LightningCLI: `--precision` was named without its value."""
    def fix(option, frameworks):
        item = Advice(rule="engine-knobs", title="t", fix="Autocast.", cause="bf16-autocast")
        env = {"device": "cpu", "script_options": [option], "frameworks": frameworks}
        return in_script_terms({"environment": env}, [item])[0].fix
    plain = _option("trainer.precision", "32-true", flags=["--trainer.precision"])
    assert fix(plain, {"lightning": "2.5.0"}).startswith(
        "This script's own option for it: run with `--trainer.precision bf16-mixed` (32-true")
    assert fix(plain, {}).startswith("This script's own option for it: `--trainer.precision` (")
    chosen = _option("precision", "fp32", choices=["fp32", "bf16", "fp16"])
    assert "run with `--precision bf16` (fp32 in this run)" in fix(chosen, {})
    assert fix({**plain, "value": "bf16-mixed"}, {"lightning": "2.5.0"}) == "Autocast."


def test_a_hydra_key_is_named_as_its_override():
    """lightning-hydra-template: `data.num_workers=4`, `model.compile=true`, and a precision
    the Trainer node lacks is added with `+`."""
    def fix_of(options, cause, frameworks=None):
        session = {"environment": {"script_options": options, "frameworks": frameworks or {}}}
        (item,) = in_script_terms(session, [Advice(rule="r", title="t", fix="F.", cause=cause)])
        return item.fix

    def key(dest, value, **more):
        return {"flags": [dest], "dest": dest, "value": value, "given": False,
                "switch": isinstance(value, bool), "form": "key=value", **more}

    workers = [key("data.num_workers", 0), key("data.batch_size", 128)]
    assert fix_of(workers, "dataloader-workers") == (
        "This script's own option for it: `data.num_workers=...` (0 in this run). F.")
    assert fix_of([key("model.compile", False)], "torch.compile") == (
        "This script's own option for it: run with `model.compile=true` (false in this run). F.")
    assert fix_of([key("model.compile", True)], "torch.compile") == "F."  # (on already)
    absent = [key("trainer.precision", None, absent=True)]
    assert fix_of(absent, "bf16-autocast", {"lightning": "2.5"}) == (
        "This script's own option for it: run with `+trainer.precision=bf16-mixed` (unset in "
        "this run). F.")
    assert fix_of(absent, "float64") == "F."  # (a key to add is named for its value only)
    assert fix_of([key("trainer.precision", "bf16-mixed")], "bf16-autocast",
                  {"lightning": "2.5"}) == "F."  # fmt: skip
    session = {"environment": {"script_options": [key("log_interval", 1)]}}
    (syncs,) = in_script_terms(session, [Advice(rule="host-syncs", title="t", fix="F.")])
    assert syncs.fix.startswith("This script's own option for it: `log_interval=...` (1 in this")


def test_the_respawn_lint_finding_names_the_persistence_switch_not_the_worker_count():
    """torchvision's classification reference: TD403's fix was told `--workers` (2 in this
    run), which keeps the respawn; only a persistence switch turns it."""
    workers = _option("workers", 2, flags=["--workers"])
    item = Advice(rule="lint", title="TD403: DataLoader with workers but without "
                  "persistent_workers", fix="see `torchdoctor lint`", references=["TD403"],
                  cause="dataloader-workers")  # fmt: skip
    (same,) = in_script_terms({"environment": {"script_options": [workers]}}, [item])
    assert same.fix == "see `torchdoctor lint`"
    persistent = _option("persistent_workers", False, switch=True, sets=True)
    (named,) = in_script_terms({"environment": {"script_options": [workers, persistent]}},
                               [item])  # fmt: skip
    assert named.fix.startswith(
        "This script's own option for it: run with `--persistent-workers` (off in this run).")


def test_an_option_told_how_to_turn_it_leaves_out_one_merely_named():
    """timm's benchmark.py: `--amp` and `--amp-dtype bfloat16` turn CPU autocast; its
    `--precision` (float32) was named beside them with no value to give."""
    options = [_option("amp", False, switch=True, sets=True),
               _option("amp_dtype", "float16"), _option("precision", "float32")]  # fmt: skip
    (item,) = in_script_terms({"environment": {"script_options": options}},
                              [Advice(rule="r", title="t", fix="F.", cause="bf16-autocast")])
    assert item.fix == ("This script's own options for it: run with `--amp` (off in this run), "
                        "run with `--amp-dtype bfloat16` (float16 in this run). F.")
    (alone,) = in_script_terms({"environment": {"script_options": options[2:]}},
                               [Advice(rule="r", title="t", fix="F.", cause="bf16-autocast")])
    assert alone.fix.startswith("This script's own option for it: `--precision` (float32")


def test_dropout_names_the_script_s_dropout_probabilities():
    """minGPT's chargpt (CfgNode): --model.embd_pdrop=, --model.resid_pdrop=,
    --model.attn_pdrop= (clients round 14); not its learning rate."""
    options = [_option(f"model.{n}", 0.1, flags=[f"--model.{n}"], form="--name=value")
               for n in ("embd_pdrop", "resid_pdrop", "attn_pdrop")]  # fmt: skip
    options.append(_option("trainer.learning_rate", 5e-4, form="--name=value"))
    item = Advice(rule="dropout", title="dropout takes 14% of the step", fix="Set it to 0.",
                  cause="dropout")  # fmt: skip
    (told,) = in_script_terms({"environment": {"script_options": options}}, [item])
    assert told.fix == (
        "This script's own options for it: `--model.embd_pdrop=...` (0.1 in this run), "
        "`--model.resid_pdrop=...` (0.1 in this run), `--model.attn_pdrop=...` (0.1 in this "
        "run). Set it to 0.")


def test_an_evaluation_names_the_size_of_the_evaluation_set():
    """x-transformers' train_path_star.py (fire) evaluates every epoch on --num_val sequences,
    one generate() each: the size is its knob (clients round 14)."""
    options = [_option("num_val", 48, flags=["--num_val"], form="fire"),
               _option("num_train", 1600, flags=["--num_train"], form="fire")]  # fmt: skip
    item = Advice(rule="long-step", title="Step 49 of 99 took 7.6x the median",
                  fix="make it cheaper (a smaller evaluation set)", cause="periodic-work")
    (told,) = in_script_terms({"environment": {"script_options": options}}, [item])
    assert told.fix.startswith("This script's own option for it: `--num_val` (48 in this run).")


def test_a_busy_machine_whose_cores_the_scripts_workers_take_names_their_count():
    """minGPT's chargpt: 'the script's own processes compete for them: 4 DataLoader workers'
    named no `--trainer.num_workers`; another job holding the cores names none."""
    workers = {"flags": ["--trainer.num_workers"], "dest": "trainer.num_workers", "value": 4,
               "given": False, "switch": False, "form": "--name=value"}  # fmt: skip
    own = Advice(rule="cpu-contention", title="The machine was busy", fix="F.",
                 cause="cpu-contention",
                 evidence=["the script's own processes compete for them: 4 DataLoader workers "
                           "beside torch's 1 threads on 2 usable cores"])  # fmt: skip
    (item,) = in_script_terms({"environment": {"script_options": [workers]}}, [own])
    assert item.fix.startswith("This script's own option for it: `--trainer.num_workers=...` (4")
    other = Advice(rule="cpu-contention", title="The machine was busy", fix="F.",
                   cause="cpu-contention", evidence=["another job held the cores"])
    (item,) = in_script_terms({"environment": {"script_options": [workers]}}, [other])
    assert item.fix == "F."


def test_an_eval_mode_pass_names_a_sampling_interval_and_a_singular_save_step():
    """An eval-mode pass between steps may be sampling (a flow or diffusion model's sample grid:
    torchcfm's train_cifar10.py samples 198 model calls in eval mode every --save_step steps;
    lucidrains' scripts have --sample_every): its interval is told with the evaluation's
    options; a work between steps that is no evaluation names --save_step like --save_steps."""
    options = [_option("sample_every", 1000, form="--name=value"),
               _option("save_step", 20000, form="--name=value"), _option("print_freq", 5)]
    def fix(title):
        item = Advice(rule="long-step", title=title, fix="Run it less often.",
                      cause="periodic-work")  # fmt: skip
        return in_script_terms({"environment": {"script_options": options}}, [item])[0].fix
    assert fix("an evaluation between steps (198 model calls in eval mode)").startswith(
        "This script's own option for it: `--sample-every=...` (1000 in this run). ")
    assert "`--save-step=...` (20000 in this run)" in fix("work between steps is 69% of the run")

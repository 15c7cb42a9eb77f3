"""Advice in the terms of the script's own options: a third-party training script is run as it
is, and its user turns its knobs from the command line (timm's ``--amp``, pytorch/examples'
``--workers``, a Hugging Face script's ``--dataloader_num_workers``, nanoGPT's
``--compile=True``), not by editing the line the generic fix shows. When the script parsed an
option for an advice's remedy (``environment.script_options``, noted by ``torchdoctor run``),
the fix begins by naming it, with its value in this run.

:data:`OPTIONS_OF_CAUSE` is the one table: a remedy (an advice's ``cause``) -> the option names
that turn it, and the setting the remedy wants. A newcomer adds a name there.

Example:
    >>> from torchdoctor.analyze.advice.base import Advice
    >>> item = Advice(rule="engine-knobs", title="t", fix="Wrap the step in autocast.",
    ...               cause="bf16-autocast")
    >>> options = [{"flags": ["--amp"], "dest": "amp", "value": False, "switch": True,
    ...             "sets": True, "given": False}]
    >>> in_script_terms({"environment": {"script_options": options}}, [item])[0].fix
    "This script's own option for it: run with `--amp` (off in this run). Wrap the step in autocast."
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice

_EVALUATION = frozenset({
    "eval_interval", "eval_every", "eval_freq", "eval_frequency", "eval_steps", "eval_iters",
    "eval_period", "evaluate_every", "val_every", "val_interval", "val_freq", "val_frequency",
    "val_check_interval", "check_val_every_n_epoch", "validation_interval", "validate_every",
    "test_freq", "test_interval", "test_every", "eval_strategy", "evaluation_strategy",
    # (the evaluation's size: x-transformers' --num_val, Hugging Face's --max_eval_samples)
    "num_val", "n_val", "val_size", "num_val_samples", "val_samples", "num_eval", "eval_size",
    "num_eval_samples", "eval_samples", "max_eval_samples", "limit_val_batches", "val_batches",
})  # fmt: skip
#: the interval of sampling between steps (a diffusion or flow model's sample grid, a language
#: model's generated text): model calls in eval mode, so told with an evaluation's options
_SAMPLING = frozenset({
    "sample_every", "sample_freq", "sample_interval", "sample_step", "sample_steps",
    "sampling_interval", "sampling_freq", "sampling_every", "sample_every_n_steps",
    "generate_every", "gen_every", "gen_interval", "generation_interval",
})  # fmt: skip
_LOGGING = frozenset({
    "log_interval", "log_every", "log_freq", "print_freq", "print_every", "logging_steps",
})  # fmt: skip
_PERIODIC = _EVALUATION | _SAMPLING | _LOGGING | frozenset({
    "save_every", "save_freq", "save_interval", "save_steps", "save_step", "save_strategy",
    "checkpoint_every", "checkpoint_interval", "ckpt_every", "ckpt_interval",
})  # fmt: skip
_WORKER_COUNTS = frozenset({
    "workers", "num_workers", "dataloader_num_workers", "n_workers", "nworkers",
    "data_workers", "loader_workers", "num_data_workers",
})  # fmt: skip
_PERSISTENCE = frozenset({"persistent_workers", "dataloader_persistent_workers"})
_PRECISION = frozenset({
    "amp", "use_amp", "autocast", "mixed_precision", "bf16", "use_bf16", "fp16", "use_fp16",
    "half", "amp_dtype", "precision", "dtype",
})  # fmt: skip

#: an advice's ``rule`` (a lint finding's: its code) or else its remedy (``Advice.cause``) ->
#: (option names, normalized: lower case, ``_`` for ``-``, no leading dashes; the setting the
#: remedy wants: "on", "off", "value" for an option whose value the reader picks: a count of
#: workers, an interval, a dtype; "every step" for an interval named only when it is 1)
OPTIONS_OF_CAUSE: dict[str, tuple[frozenset[str], str]] = {
    "bf16-autocast": (_PRECISION, "on"),
    "emulated-bf16": (_PRECISION, "off"),
    "torch.compile": (frozenset({"compile", "torch_compile", "torchcompile", "use_compile",
                                 "compile_model"}), "on"),  # fmt: skip
    "channels_last": (frozenset({"channels_last", "use_channels_last"}), "on"),
    # (a Hydra optimizer node's fused key: +model.optimizer.fused=true)
    "fused_optimizer": (frozenset({"fused", "fused_optimizer", "use_fused"}), "on"),
    "dataloader-workers": (
        _WORKER_COUNTS | _PERSISTENCE | {"pin_mem", "pin_memory", "dataloader_pin_memory"},
        "value",
    ),
    # (a busy machine whose cores the script's own DataLoader workers take: their count)
    "cpu-contention": (_WORKER_COUNTS, "value"),
    "kv-cache": (frozenset({"use_cache"}), "on"),
    "sdpa": (frozenset({"flash", "use_flash", "flash_attn", "use_flash_attn", "attn_flash",
                        "flash_attention", "use_sdpa", "sdpa", "attn_implementation"}),
             "on"),  # fmt: skip  (llm.c's train_gpt2.py: --flash 0/1)
    "padding": (frozenset({"pad_to_max_length", "group_by_length", "train_sampling_strategy"}),
                "value"),  # fmt: skip
    "activation-checkpointing": (frozenset({
        "gradient_checkpointing", "grad_checkpointing", "activation_checkpointing",
        "checkpoint_activations", "use_checkpoint", "grad_ckpt",
    }), "off"),  # fmt: skip
    "periodic-work": (_PERIODIC, "value"),
    # (minGPT's --model.attn_pdrop=, nanoGPT's --dropout=, timm's --drop, a BERT config's)
    "dropout": (frozenset({
        "dropout", "drop", "drop_rate", "dropout_rate", "dropout_prob", "dropout_p",
        "hidden_dropout_prob", "attention_probs_dropout_prob", "hidden_dropout",
        "attention_dropout", "attn_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop",
        "emb_dropout", "ff_dropout",
    }), "value"),  # fmt: skip
    # by rule (read before the cause): a sync every step is often the loss read for a log
    # line written every step; workers restarted each epoch are kept by persistence alone (no
    # count of workers does it: a respawn advice naming --workers was wrong)
    "host-syncs": (_LOGGING, "every step"),
    "worker-respawn": (_PERSISTENCE, "on"),
    # (the linter's finding of it, TD403, shares the loader advice's cause to merge with it)
    "TD403": (_PERSISTENCE, "on"),
    "float64": (frozenset({"double", "float64", "use_double", "dtype", "precision"}), "value"),
}

#: names that turn the remedy on a GPU only: nanoGPT's ``--dtype`` picks autocast's dtype on
#: CUDA and runs a CPU step under no autocast at all; a float16 switch turns float16 autocast
#: and a GradScaler, CUDA's recipe, not the CPU's bfloat16 one (DINO's ``--use_fp16 true`` on
#: a CPU enters ``torch.cuda.amp.autocast``, which leaves the CPU step in float32, and its
#: GradScaler disables itself: the step is what it was); pinned memory
GPU_ONLY: dict[str, frozenset[str]] = {
    "bf16-autocast": frozenset({"dtype", "fp16", "use_fp16", "half"}),
    # (pinned host memory speeds copies to a GPU; a CPU run copies nothing)
    "dataloader-workers": frozenset({"pin_mem", "pin_memory", "dataloader_pin_memory"}),
}

#: remedy -> the value its dtype options want (an option named ``*dtype*`` holding another
#: float type: timm's ``--amp-dtype float16`` for CPU autocast, which runs bfloat16)
DTYPE_WANTED: dict[str, str] = {"bf16-autocast": "bfloat16"}

#: the most options named in one fix
MAX_NAMED = 3

#: a fix naming one boolean field of Hugging Face's TrainingArguments (library-syncs:
#: ``TrainingArguments(logging_nan_inf_filter=False)``): HfArgumentParser makes each field an
#: option of the same name, so a script that parses them has that option
_TRAINING_ARGUMENT = re.compile(r"TrainingArguments\((\w+)=(True|False)\)")


def _spec(item: Advice) -> tuple[frozenset[str], str] | None:
    """The option names and wanted setting for ``item``: its rule's or remedy's, or else the
    TrainingArguments field its fix names.

    Example:
        >>> _spec(Advice(rule="library-syncs", title="t",
        ...              fix="TrainingArguments(logging_nan_inf_filter=False); the mask..."))
        (frozenset({'logging_nan_inf_filter'}), 'off')
        >>> _spec(Advice(rule="library-syncs", title="t", fix="Log less.")) is None
        True
        >>> names, wanted = _spec(Advice(rule="lint", title="t", references=["TD403"],
        ...                              cause="dataloader-workers"))
        >>> sorted(names), wanted
        (['dataloader_persistent_workers', 'persistent_workers'], 'on')
    """
    code = item.references[0] if item.rule == "lint" and item.references else ""
    spec = (OPTIONS_OF_CAUSE.get(item.rule) or OPTIONS_OF_CAUSE.get(code)
            or OPTIONS_OF_CAUSE.get(item.cause or ""))  # fmt: skip
    if spec is None and (found := _TRAINING_ARGUMENT.search(item.fix or "")):
        return frozenset({found.group(1)}), "on" if found.group(2) == "True" else "off"
    return spec


def _names(option: Mapping[str, Any]) -> set[str]:
    """The option's names, normalized (its destination and its long flags; a nested one's last
    part too: LightningCLI's ``--trainer.precision``, ``--data.num_workers``).

    Example:
        >>> sorted(_names({"dest": "trainer.precision", "flags": ["--trainer.precision"]}))
        ['precision', 'trainer.precision']
    """
    names = {str(option.get("dest") or "").lower().replace("-", "_")}
    for flag in option.get("flags") or ():
        if isinstance(flag, str) and flag.startswith("--"):
            names.add(flag.lstrip("-").lower().replace("-", "_"))
    return names | {name.rsplit(".", 1)[-1] for name in names if "." in name}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "unset" if value is None else str(value)


def option_phrase(
    option: Mapping[str, Any], wanted: str, dtype: str | None = None,
    precision: str | None = None,
) -> str | None:
    """How to turn ``option`` toward ``wanted`` ("on", "off", "value"; ``dtype``: the value a
    dtype option wants; ``precision``: the value a ``precision`` option wants when its choices
    do not say, Lightning's ``bf16-mixed``), or None when it is there already (a switch on for
    a remedy that wants it on) or giving it cannot get there.

    Example:
        >>> option_phrase({"flags": ["--workers"], "value": 0}, "value")
        '`--workers` (0 in this run)'
        >>> option_phrase({"flags": ["--compile"], "value": False, "form": "--name=value"}, "on")
        'run with `--compile=True` (False in this run)'
        >>> option_phrase({"flags": ["--amp"], "value": True, "switch": True, "sets": True}, "on")
        >>> option_phrase({"flags": ["--torchcompile"], "value": None, "nargs": "?"}, "on")
        'run with `--torchcompile` (unset in this run)'
        >>> option_phrase({"flags": ["--amp-dtype"], "value": "float16"}, "on", "bfloat16")
        'run with `--amp-dtype bfloat16` (float16 in this run)'
        >>> option_phrase({"flags": ["--attn_implementation"], "value": "eager"}, "on")
        'run with `--attn_implementation sdpa` (eager in this run)'
        >>> option_phrase({"flags": ["--precision"], "value": "32-true"}, "on", "bfloat16",
        ...               "bf16-mixed")
        'run with `--precision bf16-mixed` (32-true in this run)'
    """
    flags = [f for f in option.get("flags") or () if isinstance(f, str)]
    if not flags:
        return None
    value, flag = option.get("value"), flags[0]
    if wanted == "every step":  # (a log interval of 1 only: a longer one is no such line)
        if isinstance(value, bool) or value != 1:
            return None
        form = "=..." if option.get("form") in ("--name=value", "key=value") else (
            " ..." if option.get("form") == "yacs" else "")
        return f"`{flag}{form}` (1 in this run: every step)"
    is_dtype = dtype is not None and isinstance(value, str) and any(
        "dtype" in name for name in _names(option)
    )
    if is_dtype and value == dtype:
        return None
    if wanted == "on" and isinstance(value, str) and "attn_implementation" in _names(option):
        if value != "eager":  # (sdpa or flash attention already: the advice is not its)
            return None
        sep = "=" if option.get("form") in ("--name=value", "key=value") else " "
        return f"run with `{flag}{sep}sdpa` (eager in this run)"
    if option.get("form") == "yacs":  # (a yacs KEY VALUE pair after the flags)
        return _yacs_phrase(flag, value, wanted, dtype if is_dtype else None)
    if option.get("form") == "key=value":  # (a Hydra override)
        return _override_phrase(option, flag, wanted, dtype if is_dtype else None, precision)
    if option.get("form") == "--name=value":
        if is_dtype:  # (nanoGPT on a GPU: --dtype=bfloat16)
            return f"run with `{flag}={dtype}` ({value} in this run)"
        if isinstance(value, bool) and wanted in ("on", "off"):
            if value is (wanted == "on"):
                return None
            return f"run with `{flag}={wanted == 'on'}` ({value} in this run)"
        return f"`{flag}=...` ({value} in this run)"
    if option.get("switch") and isinstance(value, bool) and wanted in ("on", "off"):
        on = wanted == "on"
        if value is on:
            return None
        sets = option.get("sets")
        if not on and option.get("nargs") == "?":  # (HfArgumentParser: `--x False` turns it off)
            return f"run with `{flag} False` ({_shown(value)} in this run)"
        if sets == "either":  # (--x / --no-x)
            chosen = next((f for f in flags if f.startswith("--no") is not on), flag)
            return f"run with `{chosen}` ({_shown(value)} in this run)"
        if sets is not on:  # (giving it sets the other way: nothing to add on the command line)
            return f"leave out `{flag}` ({_shown(value)} in this run)" if option.get("given") else None
        return f"run with `{flag}` ({_shown(value)} in this run)"
    if wanted == "on" and value is None and option.get("nargs") == "?":  # (--torchcompile)
        return f"run with `{flag}` (unset in this run)"
    if is_dtype:
        return f"run with `{flag} {dtype}` ({value} in this run)"
    if dtype == "bfloat16" and any(n.endswith("precision") for n in _names(option)):
        if "bf16" in str(value):  # (Lightning's --trainer.precision bf16-mixed: on already)
            return None
        choices = [c for c in option.get("choices") or () if "bf16" in str(c)]
        wanted_value = choices[0] if choices else precision
        if wanted_value is not None:
            return f"run with `{flag} {wanted_value}` ({_shown(value)} in this run)"
    return f"`{flag}` ({_shown(value)} in this run)"


def _yacs_phrase(key: str, value: Any, wanted: str, dtype: str | None) -> str | None:
    """:func:`option_phrase` for a yacs config key: a ``KEY VALUE`` pair after the script's
    flags (``cfg.merge_from_list(args.opts)``), its value a Python literal.

    Example:
        >>> _yacs_phrase("DATALOADER.NUM_WORKERS", 0, "value", None)
        '`DATALOADER.NUM_WORKERS ...` after the flags (0 in this run)'
        >>> _yacs_phrase("SOLVER.AMP.ENABLED", False, "on", None)
        'run with `SOLVER.AMP.ENABLED True` after the flags (False in this run)'
        >>> _yacs_phrase("SOLVER.AMP.ENABLED", True, "on", None) is None
        True
    """
    if dtype is not None:
        return f"run with `{key} {dtype}` after the flags ({value} in this run)"
    if isinstance(value, bool) and wanted in ("on", "off"):
        if value is (wanted == "on"):
            return None
        return f"run with `{key} {wanted == 'on'}` after the flags ({value} in this run)"
    return f"`{key} ...` after the flags ({_shown(value)} in this run)"


def _override_phrase(
    option: Mapping[str, Any], key: str, wanted: str, dtype: str | None, precision: str | None
) -> str | None:
    """:func:`option_phrase` for a Hydra config key (``key=value`` on the command line, YAML
    values; ``+key=value`` for a key the config lacks).

    Example:
        >>> _override_phrase({"value": False}, "model.compile", "on", None, None)
        'run with `model.compile=true` (false in this run)'
        >>> _override_phrase({"value": None, "absent": True}, "trainer.precision", "on", None,
        ...                  "bf16-mixed")
        'run with `+trainer.precision=bf16-mixed` (unset in this run)'
        >>> _override_phrase({"value": 0}, "data.num_workers", "value", None, None)
        '`data.num_workers=...` (0 in this run)'
        >>> _override_phrase({"value": None, "absent": True, "switch": True},
        ...                  "model.optimizer.fused", "on", None, None)
        'run with `+model.optimizer.fused=true` (unset in this run)'
    """
    value, plus = option.get("value"), "+" if option.get("absent") else ""
    shown = "unset" if value is None else str(value).lower() if isinstance(value, bool) else value
    if dtype is not None:
        return f"run with `{key}={dtype}` ({shown} in this run)"
    if isinstance(value, bool) and wanted in ("on", "off"):
        if value is (wanted == "on"):
            return None
        return f"run with `{key}={str(wanted == 'on').lower()}` ({shown} in this run)"
    if key.endswith("precision") and precision is not None and wanted == "on":
        if "bf16" in str(value):
            return None
        return f"run with `{plus}{key}={precision}` ({shown} in this run)"
    if option.get("absent") and option.get("switch") and wanted in ("on", "off"):
        return f"run with `+{key}={str(wanted == 'on').lower()}` (unset in this run)"
    if option.get("absent"):  # (a key to add is named for a value it wants only)
        return None
    return f"`{key}=...` ({shown} in this run)"


def _preferred(options: Any, names: frozenset[str], item: Advice) -> list[Mapping]:
    """The options among ``options`` named in ``names``; for bf16 autocast, float16 switches
    (``--fp16``, ``--half``) only when the script has no bfloat16 one (a Hugging Face script
    has both ``--bf16`` and ``--fp16``: the remedy is the first); for periodic work the
    advice found to be an evaluation, its evaluation options alone (nanoGPT's
    ``--eval_interval`` and ``--eval_iters``, not its ``--log_interval``; none when it has
    none)."""
    matched = [o for o in options if isinstance(o, Mapping) and _names(o) & names]
    if item.cause == "bf16-autocast" and any("bf16" in n for o in matched for n in _names(o)):
        matched = [o for o in matched if not any("fp16" in n or "half" in n for n in _names(o))]
    if item.cause == "periodic-work" and "evaluation" in f"{item.title} {item.fix}":
        # (its evaluation options alone, or none: a print interval does not move an
        # evaluation run once per epoch: torchvision's reference named `--print-freq`)
        # (model calls in eval mode are an evaluation or sampling: a sampler's interval too)
        matched = [o for o in matched if _names(o) & (_EVALUATION | _SAMPLING)]
    if item.cause == "cpu-contention" and "DataLoader workers" not in " ".join(item.evidence):
        matched = []  # (the cores held by other jobs: no option of the script's moves that)
    return matched


def in_script_terms(session: Mapping[str, Any], found: list[Advice]) -> list[Advice]:
    """``found`` with each fix whose remedy the script has an option for beginning with it
    (see the module docstring).

    Example:
        >>> in_script_terms({}, [])
        []
    """
    options = (session.get("environment") or {}).get("script_options") or ()
    if not options:
        return found
    on_cpu = str((session.get("environment") or {}).get("device") or "cpu").startswith("cpu")
    frameworks = (session.get("environment") or {}).get("frameworks") or {}
    lightning_precision = "bf16-mixed" if {"lightning", "pytorch_lightning"} & set(
        frameworks) else None  # (Lightning's --precision values)
    for item in found:
        spec = _spec(item)
        if spec is None or "This script's own option" in (item.fix or ""):
            continue
        names, wanted = spec
        if on_cpu:
            names = names - GPU_ONLY.get(item.cause or "", frozenset())
        phrases = []
        for option in _preferred(options, names, item):
            phrase = option_phrase(option, wanted, DTYPE_WANTED.get(item.cause or ""),
                                   lightning_precision)  # fmt: skip
            if phrase is not None and phrase not in phrases:
                phrases.append(phrase)
        if wanted in ("on", "off") and any(p.startswith(("run with", "leave out")) for p in phrases):
            # (an option told how to turn it, beside one merely named: timm's benchmark.py
            # has --amp and --amp-dtype for autocast, and a --precision that overrides them)
            phrases = [p for p in phrases if p.startswith(("run with", "leave out"))]
        if phrases:
            plural = "s" if len(phrases) > 1 else ""
            said = ", ".join(phrases[:MAX_NAMED])
            item.fix = f"This script's own option{plural} for it: {said}. {item.fix or ''}".rstrip()
    return found

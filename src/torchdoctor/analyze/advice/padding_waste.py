"""Rule ``padding-waste``: a large share of the positions the model computes are padding.

A text model computes every position of its padded batch, real or not: with lengths of 10-64
tokens padded to 64, 40% of the forward and backward is spent on padding. The detailed steps
measured the first padded batch they ran (``steps[i].padding``: positions, real tokens, and the
positions each batch would have padded to its own longest row; ``collect/padding.py``), so
the rule can say which remedy applies and what it removes:

- padded beyond each batch's longest row (a fixed ``max_length``): pad per batch (dynamic
  padding), which removes exactly ``1 - longest / positions`` of the positions;
- sequences of mixed lengths in a batch: group similar lengths into batches, which removes up
  to the whole padding share (some padding is left within each group).

The saving is the removed share of the steps' forward and backward time. Suite ``fused``'s
``padding_waste`` benchmark measures how time follows positions on a small encoder's
training (one epoch, CPU, quiet machine): the time saved was 0.86-1.11 x the share of
positions removed (the optimizer step and per-batch costs do not shrink; attention grows
faster than linearly with length), so the share is a fair estimate; on a GPU with small
batches per-kernel costs that do not shrink make it an upper bound.

Example:
    >>> padding = {"positions": 64, "real": 40, "per_batch": 64, "lengths": [16, 4, 4, 16]}
    >>> steps = [{"detailed": True, "wall_ms": 10.0, "phases": {"forward": 3.0, "backward": 5.0},
    ...           "padding": padding}] * 4
    >>> [a.rule for a in padding_waste({"steps": steps, "step_ms": {"median": 10.0}})]
    ['padding-waste']
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice, advice_step_ms, fmt_ms, is_cuda, pct
from torchdoctor.analyze.advice.framework_terms import driver, group_by_length_switch
from torchdoctor.session_read import installed_package, walk

#: the padding share of the positions that is worth a word, and the least saving (share of the
#: step) for an advice
MIN_PADDING, MIN_SAVING = 0.15, 0.05
#: batches padded this much beyond their longest row are padded to a fixed length
FIXED_SLACK = 0.05

_PER_BATCH_HF = (
    "Tokenize without padding (`tokenizer(texts, truncation=True)`, no `padding=\"max_length\"`) "
    "and let the collator pad each batch to its longest sequence: `DataCollatorWithPadding"
    "(tokenizer)` (token classification: `DataCollatorForTokenClassification`), passed as the "
    "DataLoader's `collate_fn` or the Trainer's `data_collator`."
)
_PER_BATCH_CLM = (
    "Tokenize without padding (`tokenizer(texts, truncation=True)`, no `padding=\"max_length\"`) "
    "and without copying `input_ids` into `labels` (a copy made before the collator cannot be "
    "padded by it: DataCollatorWithPadding raises on it), and let "
    "`DataCollatorForLanguageModeling(tokenizer, mlm=False)` pad each batch to its longest "
    "sequence and build the labels (padding set to -100), passed as the DataLoader's "
    "`collate_fn` or the Trainer's `data_collator`."
)
_PER_BATCH = (
    "Pad each batch to its own longest sequence in the DataLoader's `collate_fn` "
    "(`torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)` and a mask from the lengths), "
    "not every sequence to one fixed length."
)
_GROUP_TRAINER = (
    "Group sequences of similar length into batches: `TrainingArguments({switch})` (the Trainer "
    "sorts by `input_ids` length within shuffled mega-batches, so training stays random)."
)
_GROUP_TRAIN = (
    "Group sequences of similar length into batches: a batch sampler that sorts the indices by "
    "length within chunks of ~50 batches and shuffles the batches (as Hugging Face's "
    "`LengthGroupedSampler` does), so training stays random."
)
_GROUP_INFER = (
    "Sort the inputs by length before batching them (and put the results back in the input "
    "order): each batch then holds sequences of similar length and pads little."
)


def padding_waste(session: Mapping[str, Any]) -> list[Advice]:
    """One advice when padding is at least MIN_PADDING of the positions and its removable part
    at least MIN_SAVING of the step (see the module docstring).

    Example:
        >>> padding = {"positions": 1024, "real": 1000, "per_batch": 1024}
        >>> steps = [{"detailed": True, "wall_ms": 10.0, "phases": {"forward": 8.0},
        ...           "padding": padding}] * 4
        >>> padding_waste({"steps": steps})  # 2% padding
        []
    """
    measured = [s for s in session.get("steps") or () if _valid(s.get("padding"))]
    if not measured:
        return []
    positions = sum(s["padding"]["positions"] for s in measured)
    real = sum(s["padding"]["real"] for s in measured)
    share = 1 - real / positions
    if share < MIN_PADDING:
        return []
    fixed = 1 - sum(s["padding"]["per_batch"] for s in measured) / positions
    grouped = _grouped_share(measured)  # (the positions grouping removes, simulated)
    detailed = [s for s in session.get("steps") or () if s.get("detailed", True)]
    # (the measured steps' forward and backward, over every detailed step's time: a generate()
    # loop pads its prompts in the prefill steps only)
    busy = sum(_busy_ms(s) for s in measured)
    compute = busy / max(1e-9, sum(float(s.get("wall_ms") or 0) for s in detailed))
    own = busy / max(1e-9, sum(float(s.get("wall_ms") or 0) for s in measured))
    step = advice_step_ms(session)
    training = any(float((s.get("phases") or {}).get("backward") or 0) > 0 for s in measured)
    trainer, hugging_face = driver(session) == "transformers", _hugging_face(session)
    group_trainer = _GROUP_TRAINER.format(switch=group_by_length_switch(session))
    per_batch_ms = fixed * compute * step
    grouped_ms = max(per_batch_ms, (grouped if grouped is not None else share) * compute * step)
    # (the fix pads per batch, then groups: its saving is the grouped one when simulated; the
    # share of all padding is the bound when the rows' lengths were not kept)
    saving = grouped_ms if grouped is not None else per_batch_ms if fixed >= FIXED_SLACK else 0.0
    upper = share * compute * step
    if step <= 0 or max(saving, grouped_ms) < MIN_SAVING * step:
        return []
    n = len(measured)
    evidence = [
        f"{pct(positions - real, positions):.0f}% of the token positions the model computed were "
        f"padding ({positions - real:,} of {positions:,}, in the first padded batch of {n} "
        f"detailed step{'s' if n != 1 else ''})",
        f"the model's {'forward and backward' if training else 'forward'} is "
        f"{100 * own:.0f}% of {'those steps' if len(measured) < len(detailed) else 'the step'}: "
        "every position costs the same compute, real or padding (the attention mask only "
        "hides it from the result)",
    ]
    grouping = (
        f"grouping similar lengths into batches removes {'about' if grouped is not None else 'up to'} "
        f"{100 * (grouped if grouped is not None else share):.0f}% ({fmt_ms(grouped_ms)} per step"
        + (f"; simulated on the {_rows(measured)} measured rows, sorted into batches of "
           f"{_batch(measured)}" if grouped is not None else "") + ")"
    )  # fmt: skip
    if fixed >= FIXED_SLACK:
        evidence.append(
            f"the batches are padded beyond their longest sequence: padding each to its own "
            f"longest removes {100 * fixed:.0f}% of the positions, {fmt_ms(per_batch_ms)} per "
            f"step ({pct(per_batch_ms, step):.0f}%); {grouping}"
        )
        per_batch = _PER_BATCH_CLM if hugging_face and _causal_lm(session) else (
            _PER_BATCH_HF if hugging_face else _PER_BATCH)
        fix = per_batch + " Then " + (
            group_trainer if trainer else _GROUP_TRAIN if training else _GROUP_INFER
        ).replace("Group", "group", 1).replace("Sort", "sort", 1)
        title = (f"{100 * share:.0f}% of the token positions are padding: pad each batch to its "
                 "longest sequence and batch similar lengths together")  # fmt: skip
    else:
        evidence.append(
            "each batch is padded to its own longest sequence already; the padding comes from "
            f"mixing lengths in a batch: {grouping}"
        )
        fix = group_trainer if trainer else _GROUP_TRAIN if training else _GROUP_INFER
        title = (f"{100 * share:.0f}% of the token positions are padding: batch sequences of "
                 "similar length")  # fmt: skip
    evidence.append(
        "time follows the positions: one epoch of a small encoder's training took 0.86-1.11x "
        "the share of positions removed off its time (benchmark suite fused, padding_waste)"
        + ("; on a GPU with small batches, fixed per-kernel costs make it an upper bound"
           if is_cuda(session) else "")
    )
    return [
        Advice(
            rule="padding-waste",
            title=title,
            confidence="medium",
            evidence=evidence,
            fix=fix,
            code=f"TrainingArguments(..., {group_by_length_switch(session)})" if trainer else None,
            references=["transformers.DataCollatorWithPadding", "group_by_length"]
            if hugging_face else ["torch.nn.utils.rnn.pad_sequence"],
            estimated_saving_ms=saving,
            saving_range_ms=[saving, upper] if grouped is None and upper > 1.05 * saving else None,
            heat=min(1.0, (saving or upper) / step),
            cause="padding",
        )
    ]


def _causal_lm(session: Mapping[str, Any]) -> bool:
    """A causal language model in the tree (its labels are its inputs shifted: fine-tuning
    scripts copy ``input_ids`` into ``labels``; peft's DoRA script did, which the collator for
    classification cannot pad).

    Example:
        >>> _causal_lm({"tree": {"children": [{"type": "PeftModelForCausalLM"}]}})
        True
    """
    return any(_CAUSAL.search(str(n.get("type") or "")) for n, _ in walk(session.get("tree") or {}))


_CAUSAL = re.compile(r"(CausalLM|LMHeadModel)$")


def _valid(padding: Any) -> bool:
    return (isinstance(padding, Mapping) and all(
        isinstance(padding.get(k), (int, float)) for k in ("positions", "real", "per_batch"))
        and padding["positions"] > 0)  # fmt: skip


def _batch(measured: list[Mapping[str, Any]]) -> int:
    """The most common batch size (rows) of the measured batches."""
    sizes = [len(s["padding"]["lengths"]) for s in measured if s["padding"].get("lengths")]
    return Counter(sizes).most_common(1)[0][0] if sizes else 0  # (ties: the first seen)


def _rows(measured: list[Mapping[str, Any]]) -> int:
    return sum(len(s["padding"].get("lengths") or ()) for s in measured)


def _grouped_share(measured: list[Mapping[str, Any]]) -> float | None:
    """The share of the measured batches' positions left out when their rows (the steps whose
    lengths were kept) are sorted by length into batches of the usual size, each padded to its
    longest; None without lengths. (Grouping over more batches, as the Trainer's 50, pads less:
    the estimate is conservative.)

    Example:
        >>> rows = [{"padding": {"positions": 8, "lengths": [4, 1]}},
        ...         {"padding": {"positions": 8, "lengths": [1, 4]}}]
        >>> _grouped_share(rows)  # [1, 1] and [4, 4]: 2 + 8 positions of 16
        0.375
    """
    kept = [s["padding"] for s in measured if s["padding"].get("lengths")]
    batch = _batch(measured)
    if not kept or batch < 2:
        return None
    lengths = sorted(n for p in kept for n in p["lengths"])
    before = sum(p["positions"] for p in kept)
    after = sum(max(lengths[i : i + batch]) * len(lengths[i : i + batch])
                for i in range(0, len(lengths), batch))  # fmt: skip
    return max(0.0, 1 - after / before)


def _busy_ms(step: Mapping[str, Any]) -> float:
    """A step's forward and backward time (ms)."""
    phases = step.get("phases") or {}
    return float(phases.get("forward") or 0) + float(phases.get("backward") or 0)


def _hugging_face(session: Mapping[str, Any]) -> bool:
    """Whether the Trainer drives, or a model at the top of the tree is a Hugging Face one
    (its source is in the ``transformers`` package).

    Example:
        >>> bert = {"kind": "module", "source": {"file": "/v/site-packages/transformers/bert.py"}}
        >>> _hugging_face({"tree": {"children": [bert]}}), _hugging_face({})
        (True, False)
    """
    if driver(session) == "transformers":
        return True
    top = ((session.get("tree") or {}).get("children")) or ()
    return any(installed_package((n.get("source") or {}).get("file")) == "transformers"
               for n in top)  # fmt: skip

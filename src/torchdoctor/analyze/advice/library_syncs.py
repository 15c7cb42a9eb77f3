"""Rule ``library-syncs``: host syncs inside an installed package, addressed where the user can act.

A sync record inside a third-party package (``library`` set by the sync audit) keeps where it
happens (``file:line`` in the package) and names the user's own line that led there
(``user_file:user_line``, e.g. ``trainer.train()``). Telling the user to rewrite the package's
line is useless; what they control is how they call it. :data:`KNOWN_LIBRARY_SYNCS` is a small
table of syncs known in popular libraries with the switch that turns each off; unknown ones are
reported with where they happen and the user's line. One Advice per user line (all the package
syncs reached from ``trainer.train()`` are one entry), recorded at least every other step (a
read at the log interval already follows the advice).

Example:
    >>> rec = {"kind": "bool", "op": "if (self.args.logging_nan_inf_filter and",
    ...        "file": "/venv/lib/site-packages/transformers/trainer.py", "line": 1919,
    ...        "per_step": 4.0, "library": "transformers", "user_file": "/me/train.py",
    ...        "user_line": 24, "user_op": "trainer.train()"}
    >>> [a.title for a in library_syncs({"syncs": [rec]})]  # doctest: +NORMALIZE_WHITESPACE
    ['transformers syncs 4 times per step inside its own code, from train.py:24 trainer.train():
      TrainingArguments(logging_nan_inf_filter=False)']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from torchdoctor.analyze.advice.base import (
    Advice,
    fmt_count,
    is_cuda,
    location,
    negligible_syncs,
    sync_heat,
    tree_step_ms,
)
from torchdoctor.analyze.advice.torch_syncs import TorchSync, known_torch_sync, torch_syncs

MIN_PER_STEP = 0.5  # below: a read every few steps, i.e. at a log interval


@dataclass(frozen=True)
class LibrarySync:
    """A sync known inside a package, and the switch that avoids it.

    It matches a record whose ``library`` is one of ``packages``, whose file ends with
    ``file`` and whose statement or function contains ``text``.

    Example:
        >>> KNOWN_LIBRARY_SYNCS[0].switch
        'TrainingArguments(logging_nan_inf_filter=False)'
    """

    packages: tuple[str, ...]
    file: str
    text: str
    what: str
    #: what the user sets to avoid it; None: inherent, one small read (said so in the advice)
    switch: str | None
    code: str
    #: without a switch: what the user can do about it instead (the fix says it)
    otherwise: str = ""
    #: the switch is to send batches without padding: with padded batches measured
    #: (``steps[i].padding``) it does not apply, and the sync is the mask's, inherent
    unpadded_switch: bool = False

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether a SyncRecord is this known sync."""
        file = str(record.get("file") or "").replace(os.sep, "/")
        where = f"{record.get('op') or ''} {record.get('function') or ''}"
        return (
            record.get("library") in self.packages
            and file.endswith("/" + self.file)
            and self.text in where
        )


_MASK_READS = (
    "the model's own mask checks (one small read per forward) have no switch: transformers "
    "reads the mask either way (without an attention_mask it tests the position ids instead)"
)

#: syncs found by running real Hugging Face and Lightning loops (docs/advice-rules.md)
KNOWN_LIBRARY_SYNCS: tuple[LibrarySync, ...] = (
    LibrarySync(
        ("transformers",),
        "trainer.py",
        "logging_nan_inf_filter",
        "the Hugging Face Trainer tests every micro-batch's loss for NaN/Inf in an `if` "
        "(torch.isnan(loss) or torch.isinf(loss)): one host read per micro-batch",
        "TrainingArguments(logging_nan_inf_filter=False)",
        "args = TrainingArguments(..., logging_nan_inf_filter=False)",
    ),
    LibrarySync(
        ("transformers",),
        "masking_utils.py",
        "find_packed_sequence_indices",
        "without an attention_mask in the batch, every forward tests position_ids for packed "
        "sequences in an `if` (find_packed_sequence_indices)",
        None,
        "",
        _MASK_READS,
    ),
    LibrarySync(
        ("transformers",),
        "masking_utils.py",
        "_ignore_causal_mask_sdpa",
        "with an attention_mask, every forward tests whether the mask is all ones, to let SDPA "
        "use is_causal instead of a mask (_ignore_causal_mask_sdpa)",
        None,
        "",
        _MASK_READS,
    ),
    LibrarySync(
        ("transformers",),
        "masking_utils.py",
        "_ignore_bidirectional_mask_sdpa",
        "an encoder (BERT-like) given an attention_mask tests at every forward whether it is "
        "all ones (padding_mask.all()), to drop the mask and let SDPA pick its fastest kernel "
        "(_ignore_bidirectional_mask_sdpa)",
        "no attention_mask in batches without padding (fixed-length or packed inputs): the "
        "test is skipped; with padded batches (a Seq2Seq collator's) it stays, one sync per "
        "forward in transformers' own SDPA path: leave it",
        'batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}  # before\n'
        'batch = {"input_ids": ids}                                          # after',
        "the batches are padded (measured), so the mask is needed and its test stays: one "
        "read per forward in transformers' own SDPA path, no switch",
        unpadded_switch=True,
    ),
    LibrarySync(
        ("transformers",),
        "generation/utils.py",
        "unfinished_sequences",
        "generate() tests after every new token whether all sequences have finished "
        "(unfinished_sequences.max() == 0) to stop early at EOS: one host read per generated "
        "token, the price of stopping early; more sequences per generate() call share it",
        None,
        "",
        "generate()'s stop test (one number read per new token, to stop at EOS) has no "
        "switch: give each generate() call more prompts (a batch) so they share it",
    ),
    LibrarySync(  # (PyG's examples/mutag_gin.py, clients round 17: global_add_pool(x, batch))
        ("torch_geometric",),
        "utils/_scatter.py",
        "int(index.max())",
        "torch_geometric's scatter reads the largest index to size its output when no size is "
        "given (dim_size = int(index.max()) + 1): a graph-level pooling without size= reads "
        "the graph count from the batch vector at every call",
        "global_add_pool(x, batch, size=data.num_graphs): pass the number of graphs, a Python "
        "int the Batch already holds (global_mean_pool and global_max_pool take size= too; "
        "other torch_geometric.utils functions a dim_size or num_nodes)",
        "x = global_add_pool(x, batch)                        # before: reads batch.max()\n"
        "x = global_add_pool(x, batch, size=data.num_graphs)  # after: no read",
    ),
    LibrarySync(
        ("lightning", "lightning_fabric", "pytorch_lightning"),
        "utilities/apply_func.py",
        "to_item",
        "Lightning converts every metric logged with prog_bar=True to a Python number each "
        "step (convert_tensors_to_scalars: .item()), even with the progress bar disabled",
        "self.log(name, value, prog_bar=False) for per-step metrics (or on_step=False)",
        'self.log("train_loss", loss, prog_bar=False)  # or on_step=False, on_epoch=True',
    ),
)


def known_sync(record: Mapping[str, Any]) -> LibrarySync | None:
    """The :data:`KNOWN_LIBRARY_SYNCS` entry of a record, or None.

    Example:
        >>> known_sync({"library": "lightning_fabric", "function": "to_item",
        ...             "file": "/v/site-packages/lightning_fabric/utilities/apply_func.py"}).packages
        ('lightning', 'lightning_fabric', 'pytorch_lightning')
    """
    return next((k for k in KNOWN_LIBRARY_SYNCS if k.matches(record)), None)


def _per_step(record: Mapping[str, Any]) -> float:
    value = record.get("per_step")
    return float(value) if isinstance(value, (int, float)) else 0.0


def _short(file: Any, line: Any) -> str:
    parts = str(file or "?").replace(os.sep, "/").split("/")
    return f"{'/'.join(parts[-2:]) if len(parts) > 1 else parts[0]}:{line}"


def _padded(session: Mapping[str, Any]) -> bool:
    """Whether the detailed steps measured padded token batches (``steps[i].padding``)."""
    return any(
        isinstance(s.get("padding"), Mapping)
        and (s["padding"].get("real") or 0) < (s["padding"].get("positions") or 0)
        for s in session.get("steps") or ()
    )  # fmt: skip


def _advice(records: list[Mapping[str, Any]], cuda: bool, padded: bool = False) -> Advice:
    first = records[0]
    user = f"{os.path.basename(str(first.get('user_file')))}:{first.get('user_line')}"
    user_op = str(first.get("user_op") or "").strip()
    packages = sorted({str(r.get("library") or "?") for r in records})
    per_step = sum(_per_step(r) for r in records)
    known: list[LibrarySync] = []
    evidence = [
        f"{fmt_count(per_step)} host syncs per step inside {', '.join(packages)}, reached from "
        f"your line {user} {user_op}".rstrip()
    ]
    in_torch: list[TorchSync] = []  # (torch's own check the package's line runs into:
    for record in records:  # torch.distributions' validation under stable-baselines3)
        entry = known_sync(record)
        if entry is not None and padded and entry.unpadded_switch:  # (padding measured: the
            entry = replace(entry, switch=None, code="")  # switch does not apply here)
        if entry is not None and entry not in known:
            known.append(entry)
        torch_entry = None if entry is not None else known_torch_sync(record)
        if torch_entry is not None and torch_entry not in in_torch:
            in_torch.append(torch_entry)
        evidence.append(
            f"{_short(record.get('file'), record.get('line'))} {record.get('op') or ''} "
            f"[{record.get('kind')}] x{fmt_count(_per_step(record))}/step"
            + (f": {entry.what}" if entry else
               f": {torch_entry.what} (inside torch's {record.get('inside')})" if torch_entry
               else ": no known switch")  # fmt: skip
        )
    if not cuda:
        evidence.append("predicted on a CPU run: each of these waits for the GPU queue on CUDA")
    switches = [k.switch for k in known if k.switch]
    unknown = [r for r in records if known_sync(r) is None and known_torch_sync(r) is None]
    fix = "; ".join([*switches, *(t.fix.rstrip(".") for t in in_torch)])
    for otherwise in dict.fromkeys(k.otherwise for k in known if k.switch is None):
        fix += ("; " if fix else "") + otherwise
    if unknown:
        fix += ("; " if fix else "") + (
            f"for the {len(unknown)} line(s) without a known switch: these are the package's "
            "own reads (logging, metric conversion, safety checks); look for its option that "
            "controls them rather than editing its code"
        )
    title = (
        f"{', '.join(packages)} syncs {fmt_count(per_step)} "
        f"time{'' if per_step == 1 else 's'} per step inside its own code, "
    )
    title += f"from {user} {user_op}".rstrip()
    if switches:  # (its first clause: the whole switch, with when it applies, is the fix)
        title += f": {switches[0].split(': ', 1)[0]}"
    elif in_torch:
        title += f": {in_torch[0].title}"
    elif unknown:
        title += ": find the package option behind it"
    else:
        title += " (known, no switch)"
    item = Advice(
        rule="library-syncs",
        title=title,
        # (on a CPU a prediction for a GPU, as host-syncs' own lines: low, ranked so)
        confidence="medium" if (switches or in_torch) and cuda else "low",
        evidence=evidence,
        fix=fix,
        references=switches + packages,
        code="\n".join([*(k.code for k in known if k.code), *(t.code for t in in_torch)]) or None,
        heat=sync_heat(per_step),
        locations=[location(first.get("user_file"), first.get("user_line"))]
        + [location(r.get("file"), r.get("line")) for r in records],
    )
    return item


def library_syncs(session: Mapping[str, Any]) -> list[Advice]:
    """Advice for syncs inside installed packages, one entry per user line that reaches them.

    Example:
        >>> library_syncs({"syncs": [{"kind": "item", "file": "t.py", "line": 3, "per_step": 1.0}]})
        []
    """
    by_user_line: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
    told = {a.cause for a in torch_syncs(session)}  # (torch's own checks with advice of theirs)
    for record in session.get("syncs") or ():
        inside = known_torch_sync(record)
        if inside is not None and f"torch-sync:{inside.file}" in told:
            continue
        if str(record.get("inside") or "").startswith("optim/"):  # torch.optim's own reads
            continue  # (LBFGS's line search, stepped from DeepXDE's train_step: not deepxde's)
        if record.get("library") and _per_step(record) >= MIN_PER_STEP:
            key = (str(record.get("user_file")), record.get("user_line"))
            by_user_line.setdefault(key, []).append(record)
    cuda, step = is_cuda(session), tree_step_ms(session)
    return [
        _advice(sorted(group, key=_per_step, reverse=True), cuda, _padded(session))
        for group in by_user_line.values()
        # (too few for the step's length, unless a stall was measured: base.negligible_syncs)
        if any(isinstance(r.get("stall_ms"), int | float) for r in group)
        or not negligible_syncs(sum(map(_per_step, group)), step)
    ]

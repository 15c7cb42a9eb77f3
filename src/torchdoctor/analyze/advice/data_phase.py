"""Rule ``data-loading``: the data phase takes >= 10% of the step (seed 004).

Loading runs on the training process between steps unless DataLoader workers overlap it with
compute. The saving assumes workers hide most of it (stated speedup of the data phase 2-10x).

The remedy depends on the DataLoaders the run iterated (``environment.data_loaders``, each
loader's settings as the profiler saw them):

- a loader with ``num_workers=0`` (or no DataLoader seen: a hand-written batch iterator):
  load in worker processes;
- workers that are not persistent, with the loader iterated more than once (``iterators``),
  or a new DataLoader made per epoch (several iterators, and a data phase whose mean is
  dominated by a few long waits): each epoch starts workers anew, and its first batches wait
  for them;
- persistent workers that still stall the step: they do not keep up, so more of them (up to
  the cores this process may use, ``environment.cpus``) or cheaper per-sample work; workers
  on every core already get no stated saving (more workers cannot hide more), and more
  workers than cores are told to leave the training process one.

A ``torchdoctor tune`` of the script that measured workers (knob ``dataloader_workers``)
replaces the stated saving: accepted, its own advice says how much (this one is dropped); not
faster, this one says so and prescribes cheaper loading instead.

Example:
    >>> data_loading({"phases": {}})
    []
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.base import SPEEDUPS, Advice, is_cuda, pct, with_saving
from torchdoctor.analyze.advice.cores import (
    cores_busy_computing,
    cores_per_process,
    local_processes,
)
from torchdoctor.analyze.advice.knobs_measured import tune_rows
from torchdoctor.session_read import center, fmt_ms, tree_step_ms

THRESHOLD = 0.10


def data_loading(session: Mapping[str, Any]) -> list[Advice]:
    """Advice when the data phase is >= 10% of the step, fitted to the loaders' settings.

    Example:
        >>> s = {"phases": {"data": {"median": 3.0}}, "step_ms": {"median": 10.0}}
        >>> data_loading(s)[0].estimated_saving_ms
        1.5
        >>> s["environment"] = {"data_loaders": [{"num_workers": 4, "persistent_workers": True}],
        ...                     "cpus": 16}
        >>> data_loading(s)[0].title
        "Data loading stalls the step: the DataLoader's 4 workers do not keep up"
    """
    step = tree_step_ms(session)
    phase = (session.get("phases") or {}).get("data")
    data = center(phase)
    if step <= 0 or data < THRESHOLD * step:
        return []
    environment = session.get("environment") or {}
    loaders: Sequence[Mapping[str, Any]] = environment.get("data_loaders") or ()
    evidence = [f"data phase {fmt_ms(data)} per step ({pct(data, step):.0f}% of the step)"]
    median = phase.get("median") if isinstance(phase, Mapping) else None
    spiky = False
    if median and (phase.get("max") or 0) >= 2 * median:
        # a few steps wait long (workers starting, a cold cache), most do not
        evidence[0] += f"; median {fmt_ms(median)}, slowest {fmt_ms(phase['max'])}"
        spiky = (phase.get("mean") or data) >= 2 * median
    fed = feeding(loaders)
    title, fix, code, settings = _remedy(fed, cores_per_process(environment), spiky,
                                         is_cuda(session))  # fmt: skip
    if fed and all(d.get("driver") == "transformers" for d in fed):
        fix, code = _trainer_form(fix, code)  # (the user writes no DataLoader there)
    elif fed and all(d.get("driver") == "skorch" for d in fed):
        fix, code = skorch_form(fix, code)
    if settings:
        evidence.append(settings)
    advice = Advice(
        rule="data-loading",
        title=title,
        confidence="medium",
        evidence=evidence,
        fix=fix,
        references=["torch.utils.data.DataLoader", "seed 004"],
        code=code,
        cause="dataloader-workers",
    )
    tuned = next((r for r in tune_rows(session) if r.get("knob") == "dataloader_workers"), None)
    if tuned is not None and tuned.get("accepted"):
        return []  # measured by torchdoctor tune: its own advice says how much
    if tuned is not None:  # measured, and workers did not help here: the guess is replaced
        return [_workers_measured_no_faster(advice, tuned, data, step)]
    fed, cpus = feeding(loaders), cores_per_process(environment)
    if (
        title.endswith("do not keep up")
        and cpus
        and min(int(d.get("num_workers") or 0) for d in fed) >= cpus
    ):
        # workers already on every core: the stated saving is of workers hiding the loading,
        # which they do already; what the cheaper loading saves is not measured
        advice.evidence.append(
            "the workers already take every core: no stated saving (what cheaper samples save "
            "is not measured here)"
        )
        advice.confidence, advice.heat = "low", 0.5 * data / step
        if str(environment.get("device") or "").startswith("cpu"):  # (they take the model's)
            advice.fix = advice.fix.rstrip(".") + _TRY_NONE
        return [advice]
    busy = cores_busy_computing(environment)
    if busy and not any(int(d.get("num_workers") or 0) for d in fed):
        # the model computes on the CPU with every core: workers would load on those same
        # cores, so the loading overlaps the compute only as far as cores are left idle
        advice.evidence.append(
            f"the model computes on the CPU with {busy} intra-op threads on "
            f"{environment.get('cpus')} cores"
            + (f" ({local_processes(environment)} ranks of {environment.get('threads')} each)"
               if local_processes(environment) > 1 else "") + ": "
            "workers would load on the cores the compute already uses, so no saving is stated "
            "(pytorch/examples VAE on 2 cores: workers measured 0.98x); measure it on this "
            "script: torchdoctor tune --knobs dataloader_workers SCRIPT"
        )
        advice.fix = CHEAPER_SAMPLES_FIX  # (on these cores, loading less is what is left)
        advice.code = CHEAPER_SAMPLES_CODE
        advice.confidence, advice.heat = "low", 0.5 * data / step
        return [advice]
    on_cpu = str(environment.get("device") or "").startswith("cpu")
    spare = (cores_per_process(environment) or 0) - int(environment.get("threads") or 0)
    if on_cpu and spare <= 1 and "workers" in title:  # (a core or none left to the workers)
        return [_workers_on_cpu(advice, fed, data, step)]
    return [with_saving(advice, step, data / step, SPEEDUPS["dataloader_workers"])]


#: measured on CPU runs where workers did not pay (their inter-process transfer per batch and
#: the cores they take from the model's threads)
CPU_WORKERS_CASES = (
    "on a CPU run the workers take cores from the model's threads and add a transfer per "
    "batch: a Hugging Face image classifier on 2 cores went from 4.1 s to 4.7 s with "
    "dataloader_num_workers=2; karpathy/makemore's 4 workers took 3.6 ms a step, none 2.3 ms"
)


def _workers_on_cpu(advice: Advice, fed: Sequence[Mapping[str, Any]], data: float,
                    step: float) -> Advice:  # fmt: skip
    """The workers advice on a CPU run with at most one core beside the model's threads: no
    stated saving, only its bound (a loader in memory can load faster in the training
    process), and with workers running, num_workers=0 to try.

    Example:
        >>> a = _workers_on_cpu(Advice("data-loading", "t", fix="f."), [{"num_workers": 4}], 3.0, 10.0)
        >>> a.estimated_saving_ms, a.saving_range_ms, "num_workers=0" in a.fix
        (None, [0.0, 1.5], True)
    """
    bound = data * (1 - 1 / SPEEDUPS["dataloader_workers"].low)
    advice.estimated_saving_ms, advice.saving_range_ms = None, [0.0, bound]
    advice.confidence, advice.heat = "low", min(1.0, 0.5 * data / step)
    advice.evidence.append(CPU_WORKERS_CASES + ": measure it (torchdoctor tune --knobs "
                           "dataloader_workers SCRIPT)")  # fmt: skip
    if any(int(d.get("num_workers") or 0) for d in fed):
        advice.fix = advice.fix.rstrip(".") + _TRY_NONE
    return advice


_TRY_NONE = (". Or try num_workers=0: on a CPU the workers take cores from the model, and a "
             "dataset held in memory often loads fastest in the training process (karpathy/"
             "makemore: 3.6 ms a step with 4 workers on 2 cores, 2.3 ms with none).")


#: the fix when workers would only share the compute's cores: load less per sample
CHEAPER_SAMPLES_FIX = (
    "Make each batch cheaper to load rather than adding workers (they would take the cores "
    "the model computes on): a dataset that fits in memory can be turned into tensors once "
    "and indexed (torchvision's MNIST: TensorDataset(ds.data.unsqueeze(1).float() / 255, "
    "ds.targets), then a DataLoader or plain slicing of a shuffled index), which replaces a "
    "PIL image and a transform per sample with one gather per batch; apply the dataset's "
    "deterministic transforms (Normalize) to the tensors once, so the model sees the same "
    "inputs, and keep random augmentation as batched tensor ops. Measure workers anyway with "
    "torchdoctor tune --knobs dataloader_workers SCRIPT."
)
#: ... and its code: the same inputs, built once
CHEAPER_SAMPLES_CODE = (
    "ds = datasets.MNIST(root, transform=Compose([ToTensor(), Normalize(m, s)]))  # before\n"
    "x = (ds.data.unsqueeze(1).float() / 255 - m) / s  # after: the same inputs, made once\n"
    "loader = DataLoader(TensorDataset(x, ds.targets), batch_size=64, shuffle=True)"
)


def _workers_measured_no_faster(
    advice: Advice, row: Mapping[str, Any], data: float, step: float
) -> Advice:
    """The data-loading advice once ``torchdoctor tune`` measured workers on this script and
    they did not make the step faster (they compete with it for the cores, or each batch is
    too cheap to hand over): the loading itself must get cheaper.

    Example:
        >>> row = {"speedup": {"median": 0.94, "low": 0.81, "high": 0.98, "pairs": 3}}
        >>> a = _workers_measured_no_faster(Advice("data-loading", "t"), row, 5.0, 15.0)
        >>> a.title, a.estimated_saving_ms, round(a.heat, 3)
        ('Data loading takes 33% of the step, and workers measured no faster here', None, 0.167)
    """
    speed = row.get("speedup") or {}
    advice.title = (
        f"Data loading takes {pct(data, step):.0f}% of the step, and workers measured no "
        "faster here"
    )
    advice.evidence.append(
        f"measured by torchdoctor tune on this script: DataLoader workers "
        f"{float(speed.get('median') or 0.0):.3g}x over the whole step "
        f"({float(speed.get('low') or 0.0):.3g}-{float(speed.get('high') or 0.0):.3g} over "
        f"{speed.get('pairs', '?')} (baseline, knob) pair(s)): not accepted"
    )
    advice.fix = (
        "Workers did not pay off on this machine (they compete with the step for its cores, or "
        "each batch is too cheap to hand over): make the loading itself cheaper: decode and "
        "transform once (cache the tensors, or pre-process the dataset to a tensor file), "
        "batch the per-sample work in collate_fn, move augmentation to the device; on a "
        "machine with more cores, measure workers again (torchdoctor tune --knobs "
        "dataloader_workers SCRIPT)."
    )
    advice.code = None
    advice.estimated_saving_ms, advice.saving_range_ms = None, None
    # (ranked by half its share: the time is measured, what removes it is not)
    advice.confidence, advice.heat = "low", 0.5 * data / step
    return advice


def feeding(loaders: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The loaders that feed the steps: those fetched from in at least half as many steps as
    the busiest (an evaluation's loader, run in one step, is not the training loader; sessions
    without per-loader step counts keep them all).

    Example:
        >>> train = {"num_workers": 4, "steps": 300}
        >>> feeding([train, {"num_workers": 0, "steps": 2}]) == [train]
        True
    """
    most = max((int(d.get("steps") or 0) for d in loaders), default=0)
    if most <= 0:
        return list(loaders)
    return [d for d in loaders if int(d.get("steps") or 0) >= most / 2]


def _remedy(
    loaders: Sequence[Mapping[str, Any]], cpus: int | None, spiky: bool = False,
    cuda: bool = True,
) -> tuple[str, str, str, str | None]:
    """(title, fix, code, evidence line on the loaders seen) for these loaders' settings
    (``spiky``: the data phase's mean is at least twice its median, a few steps wait long;
    ``cuda``: a GPU run, whose fix adds pinned memory, non-blocking copies and augmentation
    on the GPU: a CPU run has no copy to overlap and no GPU to augment on).

    Example:
        >>> _remedy([], None)[0]
        'Data loading stalls the step: overlap it with DataLoader workers'
        >>> _remedy([{"num_workers": 2, "persistent_workers": False, "iterators": 3}], 8)[0]
        'Data loading stalls the step: DataLoader workers restart at every epoch'
        >>> _remedy([{"num_workers": 0}], 2, cuda=False)[1]
        'DataLoader(num_workers=2, persistent_workers=True, prefetch_factor=2) (this process may use 2 cores).'
    """
    pin = " pin_memory=True," if cuda else ""
    if not loaders:
        return (
            "Data loading stalls the step: overlap it with DataLoader workers",
            f"Load batches with a DataLoader(num_workers=2..8,{pin} "
            "persistent_workers=True, prefetch_factor=2)"
            + ("; move augmentation to the GPU; non_blocking=True copies." if cuda else "."),
            "loader = DataLoader(ds, batch_size=64)                         # before\n"
            f"loader = DataLoader(ds, batch_size=64, num_workers=4,{pin}\n"
            "                    persistent_workers=True, prefetch_factor=2)  # after",
            None,
        )
    described = "; ".join(_describe(d) for d in loaders)
    settings = f"DataLoader{'s' if len(loaders) > 1 else ''} seen: {described}"
    workers = [int(d.get("num_workers") or 0) for d in loaders]
    cores = f" (this process may use {cpus} cores)" if cpus else ""
    if min(workers) == 0:
        suggested = max(2, min(8, (cpus or 4) - 1))
        return (
            "Data loading stalls the step: the DataLoader loads on the training process "
            "(num_workers=0)",
            f"DataLoader(num_workers={suggested}, persistent_workers=True, prefetch_factor=2)"
            f"{cores}" + (", pin_memory=True with non_blocking=True copies to a GPU; move "
                          "augmentation to the GPU." if cuda else "."),
            "loader = DataLoader(ds, batch_size=64)                         # before\n"
            f"loader = DataLoader(ds, batch_size=64, num_workers={suggested},{pin}\n"
            "                    persistent_workers=True, prefetch_factor=2)  # after",
            settings,
        )
    iterators = sum(int(d.get("iterators") or 1) for d in loaders)
    restarted = [
        d for d in loaders if not d.get("persistent_workers") and int(d.get("iterators") or 1) > 1
    ]
    # each new iterator of a non-persistent loader, and each new DataLoader, starts new worker
    # processes: the first batches after it wait for them (the data phase's few long steps)
    if restarted or (spiky and iterators > 1):
        return (
            "Data loading stalls the step: DataLoader workers restart at every epoch",
            "Create the DataLoader once, with persistent_workers=True: its workers (and their "
            "dataset copies) then live across epochs, so an epoch's first batches do not wait "
            "for new processes; then raise prefetch_factor or num_workers if it still stalls"
            f"{cores}.",
            f"loader = DataLoader(ds, num_workers={max(workers)})                         "
            "# before\n"
            f"loader = DataLoader(ds, num_workers={max(workers)}, persistent_workers=True)  "
            "# after",
            settings,
        )
    most = max(workers)
    room = cpus is None or most < cpus
    if room:
        more, after = f"raise num_workers above {most}{cores}, prefetch_factor, ", most * 2
    elif most > cpus:  # (minGPT's Trainer: 4 workers on a 2-core machine)
        after = max(1, cpus - 1)
        more = (f"the {most} workers are more than the {cpus} cores this process may use: they "
                f"take them from the training process (num_workers={after} leaves it one); ")  # fmt: skip
    else:
        more, after = f"the {most} workers already use every core{cores}: ", most
    return (
        f"Data loading stalls the step: the DataLoader's {most} workers do not keep up",
        f"{more}make each sample cheaper (decode once and cache, batch the per-sample work "
        f"with a batch sampler{', augment on the GPU' if cuda else ''})"
        + (
            "; persistent_workers=True if the loader runs more than one epoch."
            if not all(d.get("persistent_workers") for d in loaders)
            else "."
        ),
        f"loader = DataLoader(ds, num_workers={most}, persistent_workers=True)  # before\n"
        f"loader = DataLoader(ds, num_workers={after}, persistent_workers=True,\n"
        "                    prefetch_factor=4)                              # after",
        settings,
    )


def _trainer_form(fix: str, code: str) -> tuple[str, str]:
    """The fix and code in the Hugging Face Trainer's terms: it builds its DataLoaders from
    ``TrainingArguments`` (``dataloader_num_workers``, ...), and the script has no
    ``DataLoader(...)`` call to edit.

    Example:
        >>> code = "loader = DataLoader(ds)  # before\\nloader = DataLoader(ds, num_workers=3, persistent_workers=True, pin_memory=True)  # after"
        >>> _trainer_form("Use workers.", code)[1]
        'TrainingArguments(..., dataloader_num_workers=3, dataloader_persistent_workers=True, dataloader_pin_memory=True)'
    """
    after = code.split("# before", 1)[-1]
    workers = re.findall(r"num_workers=(\d+)", after)
    prefetch = re.findall(r"prefetch_factor=(\d+)", after)
    arguments = (f"dataloader_num_workers={workers[-1] if workers else 4}, "
                 "dataloader_persistent_workers=True"
                 + (", dataloader_pin_memory=True" if "pin_memory=True" in after else "")
                 + (f", dataloader_prefetch_factor={prefetch[-1]}" if prefetch else ""))  # fmt: skip
    return (f"The Trainer builds this DataLoader from TrainingArguments: set {arguments}. "
            f"In DataLoader terms: {fix}", f"TrainingArguments(..., {arguments})")


def skorch_form(fix: str, code: str) -> tuple[str, str]:
    """The fix and code in skorch's terms: a skorch net builds its DataLoaders itself and
    passes them its ``iterator_train__*`` arguments (the README's classifier: no
    ``DataLoader(...)`` in the script).

    Example:
        >>> code = "loader = DataLoader(ds)  # before\\nloader = DataLoader(ds, num_workers=2, persistent_workers=True, prefetch_factor=2)  # after"
        >>> skorch_form("Use workers.", code)[1]
        'net.set_params(iterator_train__num_workers=2, iterator_train__persistent_workers=True, iterator_train__prefetch_factor=2)'
    """
    after = code.split("# before", 1)[-1].split("DataLoader(", 1)[-1]
    settings = re.findall(r"(num_workers|persistent_workers|pin_memory|prefetch_factor)=(\w+)",
                          after)  # fmt: skip
    arguments = ", ".join(f"iterator_train__{key}={value}" for key, value in settings)
    return (f"The skorch net builds this DataLoader from its iterator_train__* arguments: "
            f"NeuralNetClassifier(..., {arguments}) or net.set_params({arguments}). In "
            f"DataLoader terms: {fix}", f"net.set_params({arguments})")


def _describe(loader: Mapping[str, Any]) -> str:
    """One loader's settings as the user writes them (and how often it was iterated).

    Example:
        >>> _describe({"num_workers": 2, "persistent_workers": False, "pin_memory": True,
        ...            "iterators": 3})
        'num_workers=2, persistent_workers=False, pin_memory=True (iterated 3x)'
    """
    text = ", ".join(
        f"{key}={loader.get(key, default)}"
        for key, default in (("num_workers", 0), ("persistent_workers", False),
                             ("pin_memory", False))
    )  # fmt: skip
    count = int(loader.get("iterators") or 1)
    return text + (f" (iterated {count}x)" if count > 1 else "")

"""The Advice record, the stated speedups of remedies, and the read-only Session helpers rules use.

Every estimated saving is Amdahl's law over a *measured* fraction of the step and a *stated*
expected speedup of the remedy (:data:`SPEEDUPS`, documented in ``docs/advice-rules.md``):
``saving = step_ms * fraction * (1 - 1 / speedup)``. A rule that cannot measure the affected
part leaves ``estimated_saving_ms`` as ``None`` rather than inventing a number.

Example:
    >>> amdahl_saving(100.0, 0.5, 2.0)
    25.0
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from torchdoctor.analyze.advice.speedups import SPEEDUPS, Speedup  # noqa: F401 (re-exported)

# The session-reading helpers live in torchdoctor.session_read (their one definition); the
# rules import them from here too, beside Advice and pct.
from torchdoctor.session_read import (  # noqa: F401 (re-exported for the rules)
    PHASES,
    center,
    fmt_count,
    fmt_ms,
    median,
    node_ms,
    quantile,
    saving_step_ms,
    step_ms,
    tree_step_ms,
    walk,
)

CONFIDENCES = ("high", "medium", "low")

#: what a script moved to channels_last must change beside the model and its input: a view
#: that flattens a convolution's output raises there (ignite's MNIST example, clients round 21:
#: `x = x.view(-1, 320)`, "view size is not compatible with input tensor's size and stride")
CHANNELS_LAST_VIEW = (
    " A .view() of a convolution's output (x.view(-1, 320) before a Linear layer) raises on a "
    "channels_last tensor: use .reshape() or .flatten(1) there."
)

#: what a matrix multiply's fix adds on a CPU run where the CPU computes bfloat16 in hardware
#: (``environment.bf16_native``): autocast pays off there too (measured by a user's run)
CPU_BF16_NOTE = (
    " This CPU computes bfloat16 in hardware (AVX512-BF16 / AMX): under "
    "torch.autocast('cpu', dtype=torch.bfloat16) the multiply runs in bfloat16 here too "
    "(pytorch/examples mnist_forward_forward's 10,000 x 784 x 500 multiply on such a CPU: "
    "74 ms in float32, 25 ms under CPU autocast)."
)


#: what every torch.compile remedy adds: the cost that the stated speedup leaves out
COMPILE_CAVEAT = (
    " Compiling takes seconds to minutes before the first step, and again for each new input "
    "shape (pad batches to a few fixed lengths, or torch.compile(model, dynamic=True)): it pays "
    "off on long runs (a 60-step Hugging Face ViT fine-tune on a CPU went from 9 s to 38 s "
    "compiled); `torchdoctor tune` measures the gain and the compile time on your step."
)


def prescribes_compile(item: Any) -> bool:
    """Whether an advice's remedy is torch.compile (its cause, or its code compiling the model).

    Example:
        >>> prescribes_compile(Advice("r", "t", cause="torch.compile")), prescribes_compile(Advice("r", "t"))
        (True, False)
    """
    return item.cause == "torch.compile" or "torch.compile(model)" in (item.code or "")


def with_compile_caveat(found: list[Any]) -> list[Any]:
    """``found`` with :data:`COMPILE_CAVEAT` added to each advice whose remedy is
    torch.compile (once): its stated speedup leaves the compile time out.

    Example:
        >>> item = Advice(rule="r", title="t", fix="Measure it: torchdoctor tune t.py",
        ...               cause="torch.compile")
        >>> with_compile_caveat([item])[0].fix[:48]
        'Measure it: torchdoctor tune t.py. Compiling tak'
    """
    for item in found:
        if prescribes_compile(item) and "compile time" not in (item.fix or ""):  # (once)
            item.fix = with_sentence(item.fix, COMPILE_CAVEAT)
    return found


def with_sentence(fix: str | None, text: str) -> str:
    """``fix`` followed by ``text`` (which starts with its own space), a full stop put between
    them when ``fix`` ends without one (a fix ending in a command).

    Example:
        >>> with_sentence("Measure it: torchdoctor tune t.py", " Then compare.")
        'Measure it: torchdoctor tune t.py. Then compare.'
    """
    fix = (fix or "").rstrip()
    return fix + ("" if not fix or fix[-1] in ".;:!?)" else ".") + text


#: typical backward / forward time ratio of a layer (two matmuls per forward matmul).
TYPICAL_BACKWARD_FORWARD_RATIO = 2.0
#: typical training step / inference time ratio (forward + backward + optimizer ~ 3 forwards).
TYPICAL_TRAIN_INFERENCE_RATIO = 3.0


def amdahl_saving(step_time_ms: float, fraction: float, speedup: float) -> float:
    """Time saved per step when a part taking ``fraction`` of the step gets ``speedup`` faster.

    Example:
        >>> round(amdahl_saving(200.0, 0.72, 1.5), 1)
        48.0
    """
    if speedup <= 0:
        raise ValueError(f"speedup must be positive, got {speedup}; pass e.g. 1.5 for 1.5x")
    fraction = min(max(fraction, 0.0), 1.0)
    return step_time_ms * fraction * (1.0 - 1.0 / speedup)


@dataclass
class Advice:
    """One prescription: what to change, why (measured evidence) and what it should save.

    ``priority`` is assigned by :func:`torchdoctor.analyze.advice.advise` (1 = do first).
    ``saving_range_ms`` is the range implied by the remedy's stated speedup range; ``heat``
    (0..1, the measured share of the step where the evidence lives) orders advice whose saving
    cannot be estimated. ``code`` is an optional before/after snippet for reports.
    ``location`` (``{"file", "line"}``) names the one source line the advice is about, when it
    is about one: advice on the same line can be merged by it.

    Example:
        >>> a = Advice("dominant-module", "Speed up decoder", estimated_saving_ms=12.0)
        >>> a.to_dict()["rule"]
        'dominant-module'
    """

    rule: str
    title: str
    priority: int = 0
    estimated_saving_ms: float | None = None
    estimated_saving_pct: float | None = None
    confidence: str = "medium"
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    references: list[str] = field(default_factory=list)
    saving_range_ms: list[float] | None = None
    heat: float = 0.0
    code: str | None = None
    #: ``file:line`` of each source line the advice is about; entries naming the same line
    #: merge into one (see :mod:`torchdoctor.analyze.advice.merge`)
    locations: list[str] = field(default_factory=list)
    #: the remedy it prescribes when several rules can find it (``"torch.compile"``,
    #: ``"dataloader-workers"``): entries with the same cause merge into one
    cause: str | None = None
    #: a generic engine knob whose gain is a stated range, not measured on the user's code:
    #: ranks after every measured finding
    generic: bool = False
    #: of a saving stated only as a bound: the share of it real runs of the remedy measured
    #: (``Speedup.realized``); ranks it by that expected saving. Not part of the JSON.
    bound_realized: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, the ``Advice`` shape of docs/session-schema.md (plus extras)."""
        data = asdict(self)
        del data["bound_realized"]
        return data


def sync_heat(per_step: float) -> float:
    """How hot host syncs are without a measured stall: 0.05 per sync per step, at most 0.5
    (every rule weighing syncs uses this one scale, so their advice ranks consistently).

    Example:
        >>> sync_heat(1.0), sync_heat(40.0)
        (0.05, 0.5)
    """
    return min(0.5, 0.05 * max(float(per_step), 0.0))


#: at most what one host sync costs a CUDA step when its stall was not measured: after the
#: sync returns the device idles until the host queues work again (the Python between the sync
#: and the next kernel launch, usually tens of microseconds); 1 ms is a generous bound
SYNC_COST_BOUND_MS = 1.0
#: syncs whose bounded cost is under this share of the step get no advice of their own (they
#: stay in the sync table): 20 reads in a 37 s LBFGS step are nobody's bottleneck
NEGLIGIBLE_SYNC_SHARE = 0.01


def negligible_syncs(per_step: float, step: float) -> bool:
    """True when ``per_step`` unmeasured syncs cost under 1% of a ``step`` ms step even at
    :data:`SYNC_COST_BOUND_MS` each (every rule weighing syncs drops such advice the same way).

    Example:
        >>> negligible_syncs(20, 37_000.0), negligible_syncs(1, 15.0), negligible_syncs(1, 0.0)
        (True, False, False)
    """
    return step > 0 and max(float(per_step), 0.0) * SYNC_COST_BOUND_MS < (
        NEGLIGIBLE_SYNC_SHARE * step
    )


#: the stated speedups that are torch.compile's (on a CPU: :func:`compile_on_cpu`)
COMPILE_SPEEDUPS = frozenset({"compile", "compile_repeated"})


def compile_on_cpu(advice: Advice, step_time_ms: float, fraction: float,
                   speedup_key: str = "compile_cpu") -> Advice:
    """A remedy whose CPU gain ranges from a loss to a gain (torch.compile; channels_last:
    ``speedup_key``): no saving stated, only its bound ("up to", at the high end of
    ``SPEEDUPS[speedup_key]``), ranked by its share; the evidence says why.

    Example:
        >>> a = compile_on_cpu(Advice("r", "t"), 100.0, 0.5)
        >>> a.estimated_saving_ms, [round(x, 1) for x in a.saving_range_ms], a.heat
        (None, [0.0, 12.1], 0.5)
    """
    speedup = SPEEDUPS[speedup_key]
    advice.estimated_saving_ms = None
    advice.saving_range_ms = [0.0, amdahl_saving(step_time_ms, fraction, speedup.high)]
    advice.heat = max(advice.heat, min(max(fraction, 0.0), 1.0))
    advice.bound_realized = speedup.realized
    cited = any(speedup.source in line for line in advice.evidence)
    advice.evidence.append(
        "on a CPU its gain is uncertain, so none is stated"
        + ("" if cited else f": {speedup.source}") + "; measure it on your step with "
        "torchdoctor tune"
    )
    return advice


def with_saving(advice: Advice, step_time_ms: float, fraction: float, speedup: Speedup) -> Advice:
    """Fill an Advice's saving (Amdahl at the low end) and its range from a Speedup.

    Example:
        >>> a = with_saving(Advice("r", "t"), 100.0, 0.5, Speedup(2.0, 4.0, "x"))
        >>> a.estimated_saving_ms, a.saving_range_ms
        (25.0, [25.0, 37.5])
    """
    advice.estimated_saving_ms = amdahl_saving(step_time_ms, fraction, speedup.low)
    advice.saving_range_ms = [
        advice.estimated_saving_ms,
        amdahl_saving(step_time_ms, fraction, speedup.high),
    ]
    advice.heat = max(advice.heat, min(max(fraction, 0.0), 1.0))
    return advice


# -- read-only Session helpers ------------------------------------------------------------


def is_cuda(session: Mapping[str, Any]) -> bool:
    """Whether the session ran on a CUDA device.

    Example:
        >>> is_cuda({"environment": {"device": "cuda:0 NVIDIA H200"}})
        True
    """
    device = str((session.get("environment") or {}).get("device") or "")
    return device.startswith("cuda")


def one_step_run(session: Mapping[str, Any]) -> bool:
    """No step boundary was seen: the whole run is one step (a one-shot inference script).
    Its lines outside the model (imports, loading, saving the output) run once, so the
    per-step remedies (every N steps, out of the loop) do not apply; the reports show them.

    Example:
        >>> one_step_run({"config": {"step_boundary": "whole_run"}}), one_step_run({})
        (True, False)
    """
    return (session.get("config") or {}).get("step_boundary") == "whole_run"


def numbering_note(session: Mapping[str, Any]) -> str:
    """How the report numbers steps, when that is not the script's own count: from the first
    profiled step, after the warm-up ones (build-nanogpt evaluated at its steps 20 and 39,
    reported as steps 19 and 38).

    Example:
        >>> numbering_note({"config": {"warmup": 1}}), numbering_note({"config": {"warmup": 0}})
        ('; steps are numbered from 0 after 1 warm-up step', '')
    """
    warmup = int((session.get("config") or {}).get("warmup") or 0)
    if warmup <= 0:
        return ""
    return f"; steps are numbered from 0 after {warmup} warm-up step{'s' if warmup > 1 else ''}"


def same_file(a: str | None, b: str | None) -> bool:
    """Whether two paths name the same source file (one may be relative to the other).

    Example:
        >>> same_file("/home/me/proj/train.py", "proj/train.py")
        True
    """
    if not a or not b:
        return False
    a_norm, b_norm = os.path.normpath(a), os.path.normpath(b)
    if a_norm == b_norm:
        return True
    longer, shorter = (a_norm, b_norm) if len(a_norm) >= len(b_norm) else (b_norm, a_norm)
    return longer.endswith(os.sep + shorter.lstrip(os.sep)) and not os.path.isabs(shorter)


def location(file: Any, line: Any) -> str:
    """The ``file:line`` of an advice's ``locations`` (the file as recorded).

    Example:
        >>> location("/src/train.py", 12)
        '/src/train.py:12'
    """
    return f"{file or '?'}:{line if line is not None else '?'}"


def split_location(text: str) -> tuple[str, int | None]:
    """``(file, line)`` of a ``file:line`` string (line None when it is not a number).

    Example:
        >>> split_location("/src/train.py:12")
        ('/src/train.py', 12)
    """
    file, _, line = str(text).rpartition(":")
    return (file, int(line)) if line.isdigit() else (str(text), None)


def pct(part: float, whole: float) -> float:
    """``part`` as a percentage of ``whole`` (0 when whole is 0).

    Example:
        >>> pct(1, 4)
        25.0
    """
    return 100.0 * part / whole if whole > 0 else 0.0


def unattributed_ms(session: Mapping[str, Any]) -> float:
    """Forward + backward time of the root's ``(self)`` entry: work no module or region claims.

    Example:
        >>> rest = {"kind": "self", "forward_ms": {"median": 2.0}, "backward_ms": {"median": 1.0}}
        >>> unattributed_ms({"tree": {"kind": "root", "children": [rest]}})
        3.0
    """
    tree = session.get("tree") or {}
    for child in tree.get("children") or ():
        if child.get("kind") == "self":
            return center(child.get("forward_ms")) + center(child.get("backward_ms"))
    return 0.0


def advice_step_ms(session: Mapping[str, Any]) -> float:
    """The step an advice's saving is a share of: :func:`saving_step_ms`, or the run's mean
    step when periodic work makes that longer (a rollout every 32 steps: 11 ms per step on
    average over a 4 ms median).

    Example:
        >>> advice_step_ms({"step_ms": {"mean": 11.0, "median": 4.0}})
        11.0
    """
    return max(saving_step_ms(session), center(session.get("step_ms")))

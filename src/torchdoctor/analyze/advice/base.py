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
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

CONFIDENCES = ("high", "medium", "low")


@dataclass(frozen=True)
class Speedup:
    """An expected speedup range of a remedy on the part it applies to, with where it comes from.

    Example:
        >>> Speedup(1.2, 1.5, "torch.compile docs").low
        1.2
    """

    low: float
    high: float
    source: str


#: remedy -> expected speedup of the affected part. Savings use ``low`` (conservative); the
#: range is shown to the reader. Sources are cited in docs/advice-rules.md.
SPEEDUPS: dict[str, Speedup] = {
    "sdpa": Speedup(1.3, 2.0, "fused scaled_dot_product_attention vs unfused attention"),
    "bf16_autocast": Speedup(1.3, 2.0, "bf16/fp16 tensor cores on matmul-bound CUDA work"),
    "tf32": Speedup(1.2, 2.0, "TF32 tensor cores for fp32 matmul/conv on Ampere or newer"),
    "channels_last": Speedup(1.05, 1.3, "channels_last convolutions (cuDNN / oneDNN)"),
    "compile": Speedup(1.1, 1.5, "torch.compile fusion of elementwise chains and overheads"),
    "compile_repeated": Speedup(1.2, 1.5, "torch.compile on a stack of identical layers"),
    "halve_layers": Speedup(2.0, 2.0, "half the layers of a stack take half the time"),
    "ops_replacement": Speedup(2.0, 10.0, "torchdoctor.ops batched sync-free building blocks"),
    "dataloader_workers": Speedup(2.0, 10.0, "DataLoader workers overlap loading with compute"),
    "on_device": Speedup(2.0, 10.0, "on-device op instead of a CPU round trip"),
}

#: typical backward / forward time ratio of a layer (two matmuls per forward matmul).
TYPICAL_BACKWARD_FORWARD_RATIO = 2.0
#: typical training step / inference time ratio (forward + backward + optimizer ~ 3 forwards).
TYPICAL_TRAIN_INFERENCE_RATIO = 3.0


def amdahl_saving(step_ms: float, fraction: float, speedup: float) -> float:
    """Time saved per step when a part taking ``fraction`` of the step gets ``speedup`` faster.

    Example:
        >>> round(amdahl_saving(200.0, 0.72, 1.5), 1)
        48.0
    """
    if speedup <= 0:
        raise ValueError(f"speedup must be positive, got {speedup}; pass e.g. 1.5 for 1.5x")
    fraction = min(max(fraction, 0.0), 1.0)
    return step_ms * fraction * (1.0 - 1.0 / speedup)


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
    location: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, the ``Advice`` shape of docs/session-schema.md (plus extras)."""
        return asdict(self)


def with_saving(advice: Advice, step_ms: float, fraction: float, speedup: Speedup) -> Advice:
    """Fill an Advice's saving (Amdahl at the low end) and its range from a Speedup.

    Example:
        >>> a = with_saving(Advice("r", "t"), 100.0, 0.5, Speedup(2.0, 4.0, "x"))
        >>> a.estimated_saving_ms, a.saving_range_ms
        (25.0, [25.0, 37.5])
    """
    advice.estimated_saving_ms = amdahl_saving(step_ms, fraction, speedup.low)
    advice.saving_range_ms = [
        advice.estimated_saving_ms,
        amdahl_saving(step_ms, fraction, speedup.high),
    ]
    advice.heat = max(advice.heat, min(max(fraction, 0.0), 1.0))
    return advice


# -- read-only Session helpers ------------------------------------------------------------


def median(stat: Any) -> float:
    """The median of a Stat dict (0.0 when absent); a bare number is returned as is.

    Example:
        >>> median({"median": 3.0}), median(None), median(2)
        (3.0, 0.0, 2.0)
    """
    if isinstance(stat, Mapping):
        value = stat.get("median")
        return float(value) if isinstance(value, (int, float)) else 0.0
    if isinstance(stat, (int, float)) and not isinstance(stat, bool):
        return float(stat)
    return 0.0


def center(stat: Any) -> float:
    """The typical value of a Stat: its ``mean`` when recorded (means add up across a tree, as
    the tree renderer shows them), else its ``median``; a bare number is returned as is.

    Example:
        >>> center({"median": 3.0, "mean": 3.5}), center({"median": 3.0}), center(None)
        (3.5, 3.0, 0.0)
    """
    if isinstance(stat, Mapping):
        value = stat.get("mean")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return median(stat)


def step_ms(session: Mapping[str, Any]) -> float:
    """The typical step time (see :func:`center`): ``step_ms``, else the tree root's total, else 0.

    Example:
        >>> step_ms({"step_ms": {"median": 5.0}})
        5.0
    """
    value = center(session.get("step_ms"))
    if value > 0:
        return value
    root = session.get("tree") or {}
    return center(root.get("total_ms")) or center(root.get("forward_ms"))


def node_ms(node: Mapping[str, Any]) -> float:
    """A node's inclusive time per step (forward + backward), see :func:`center`.

    Example:
        >>> node_ms({"total_ms": {"median": 4.0}})
        4.0
    """
    total = center(node.get("total_ms"))
    if total > 0:
        return total
    return center(node.get("forward_ms")) + center(node.get("backward_ms"))


def walk(node: Mapping[str, Any] | None, depth: int = 0) -> Iterator[tuple[Mapping, int]]:
    """Every node of a tree with its depth, parents before children.

    Example:
        >>> [n["path"] for n, _ in walk({"path": "", "children": [{"path": "a"}]})]
        ['', 'a']
    """
    if not node:
        return
    yield node, depth
    for child in node.get("children") or ():
        yield from walk(child, depth + 1)


def is_cuda(session: Mapping[str, Any]) -> bool:
    """Whether the session ran on a CUDA device.

    Example:
        >>> is_cuda({"environment": {"device": "cuda:0 NVIDIA H200"}})
        True
    """
    device = str((session.get("environment") or {}).get("device") or "")
    return device.startswith("cuda")


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


def fmt_ms(value: float | None) -> str:
    """A time in ms for evidence text: 3 significant digits.

    Example:
        >>> fmt_ms(134.01), fmt_ms(0.391)
        ('134 ms', '0.391 ms')
    """
    if value is None:
        return "unknown"
    if abs(value) >= 100:
        return f"{value:.0f} ms"
    return f"{value:.3g} ms"


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

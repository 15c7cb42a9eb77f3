"""The shared interface of the seed workloads: a slow and a fast variant of one system.

Every workload is a self-contained, synthetic-data version of one seed system (see
``seeds/README.md``). It builds its models and data once, then offers

- ``slow_step()``: one step of the seed's "before" code (one training step, or one sample),
- ``fast_step()``: the same step built from torchdoctor's ops/train parts,
- ``check_equivalence()``: an :class:`EquivalenceReport` saying whether the fast variant computes
  what the slow one does (exactly where it should, with the measured difference otherwise),
- ``describe()``: a few lines on what runs, at which size,
- ``profile_target(variant)``: the arguments for :func:`torchdoctor.profile`.

Example:
    >>> from torchdoctor.workloads import build
    >>> w = build("mixture_vae", scale="tiny")
    >>> _ = w.slow_step(); _ = w.fast_step()
    >>> w.check_equivalence(steps=3).equivalent
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

SCALES = ("tiny", "cpu", "seed")


@contextlib.contextmanager
def _null_region(name: str) -> Iterator[None]:
    yield


def region(name: str) -> contextlib.AbstractContextManager:
    """Name a block of non-module code for the profiler (a no-op when nothing profiles).

    Uses :func:`torchdoctor.region` when the profiler package is importable, else does nothing.

    Example:
        >>> with region("matching"):
        ...     pass
    """
    try:
        from torchdoctor.collect.regions import region as td_region
    except ImportError:  # the profiler is not there: regions are no-ops
        return _null_region(name)
    return td_region(name)


@dataclass
class EquivalenceCheck:
    """One comparison between the slow and the fast variant.

    ``passed`` is None for a check that only reports a difference (an approximate setting).

    Example:
        >>> EquivalenceCheck("loss", True, 1e-7, 1e-5).line()
        '[ok] loss = 1e-07 (tolerance 1e-05)'
    """

    name: str
    passed: bool | None
    value: float | None = None
    tolerance: float | None = None
    detail: str = ""

    def line(self) -> str:
        verdict = {True: "ok", False: "FAIL", None: "report"}[self.passed]
        parts = [f"[{verdict}] {self.name}"]
        if self.value is not None:
            parts.append(f"= {self.value:.3g}")
        if self.tolerance is not None:
            parts.append(f"(tolerance {self.tolerance:.1g})")
        if self.detail:
            parts.append(f"- {self.detail}")
        return " ".join(parts)


@dataclass
class EquivalenceReport:
    """What ``check_equivalence()`` found: the checks that must pass and those only reported.

    Example:
        >>> r = EquivalenceReport("demo", [EquivalenceCheck("loss", True, 0.0, 1e-5)])
        >>> r.equivalent, r.summary().splitlines()[0]
        (True, 'demo: equivalent')
    """

    workload: str
    checks: list[EquivalenceCheck] = field(default_factory=list)

    @property
    def equivalent(self) -> bool:
        """True when every check that has a verdict passed."""
        return all(c.passed is not False for c in self.checks)

    def add(self, name: str, passed: bool | None, value: float | None = None, **kw: Any) -> None:
        self.checks.append(EquivalenceCheck(name, passed, value, **kw))

    def summary(self) -> str:
        head = f"{self.workload}: {'equivalent' if self.equivalent else 'NOT equivalent'}"
        return "\n".join([head, *("  " + c.line() for c in self.checks)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "equivalent": self.equivalent,
            "checks": [dataclasses.asdict(c) for c in self.checks],
        }


@dataclass
class ProfileTarget:
    """Arguments for :func:`torchdoctor.profile` of one variant of a workload.

    Example:
        >>> target = ProfileTarget(step_fn=lambda: None, label="demo (fast)")
        >>> target.model is None, target.label
        (True, 'demo (fast)')
    """

    step_fn: Callable[[], Any]
    model: torch.nn.Module | None = None
    inference_fn: Callable[[], Any] | None = None
    label: str = ""


class Workload(ABC):
    """Base class of the seed workloads; subclasses set the class attributes and the steps.

    ``config`` is a dataclass instance (``Config`` of the subclass) built from keyword
    arguments; ``scale`` picks a preset ("tiny" for tests, "cpu" the default, "seed" the seed's
    real sizes for a GPU) and explicit keywords override it.

    Example:
        >>> from torchdoctor.workloads import build
        >>> w = build("mixture_vae", scale="tiny")
        >>> isinstance(w, Workload), w.seed_id, w.profile_target("fast").label
        (True, '002', 'mixture_vae (fast)')
    """

    name: ClassVar[str] = ""
    seed_id: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    kind: ClassVar[str] = "train"  # "train" (a step updates weights) or "inference"
    Config: ClassVar[type] = object
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: profiled steps of the slow variant in ``torchdoctor demo`` (its steps cost seconds)
    demo_steps: ClassVar[int] = 5

    def __init__(self, scale: str = "cpu", device: str | torch.device = "cpu", **overrides: Any):
        if scale not in SCALES:
            raise ValueError(
                f"unknown scale {scale!r} for workload {self.name!r}; expected one of {SCALES}"
            )
        known = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(
                f"unknown config field(s) {unknown} for workload {self.name!r}; "
                f"known fields: {sorted(known)}"
            )
        values = {**self.presets.get(scale, {}), **overrides}
        self.scale = scale
        self.device = torch.device(device)
        self.config = self.Config(**values)
        self.setup()

    @abstractmethod
    def setup(self) -> None:
        """Build models, optimizers and synthetic data from ``self.config``."""

    @abstractmethod
    def slow_step(self) -> Any:
        """One step of the seed's slow ("before") code."""

    @abstractmethod
    def fast_step(self) -> Any:
        """One step of the fast variant built from torchdoctor's parts."""

    @abstractmethod
    def check_equivalence(self, **kwargs: Any) -> EquivalenceReport:
        """Compare the variants; see each workload for what must match exactly."""

    def profile_target(self, variant: str = "slow") -> ProfileTarget:
        """What :func:`torchdoctor.profile` should run for ``variant`` ("slow" or "fast")."""
        if variant not in ("slow", "fast"):
            raise ValueError(f"variant must be 'slow' or 'fast', got {variant!r}")
        step = self.slow_step if variant == "slow" else self.fast_step
        return ProfileTarget(step_fn=step, model=None, label=f"{self.name} ({variant})")

    def comparisons(self) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
        """``(name, baseline, candidate)`` pairs to time interleaved; the first is slow vs fast.

        Workloads add the partial prescriptions (e.g. encoder caching alone).
        """
        return [("slow vs fast", self.slow_step, self.fast_step)]

    def describe(self) -> str:
        """A few lines: what the workload is, its size, and what the fast variant changes."""
        fields = ", ".join(
            f"{f.name}={getattr(self.config, f.name)}" for f in dataclasses.fields(self.config)
        )
        return f"{self.name} (seed {self.seed_id}, scale {self.scale}): {self.summary}\n  {fields}"


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed`` (synthetic data never uses globals).

    Example:
        >>> g = seeded_generator(0)
        >>> torch.randn(2, generator=g).shape
        torch.Size([2])
    """
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g

"""The :class:`Rule` record: a code, its name, severity and the documentation of its fix.

Each rule family module declares its rules beside its checks; :mod:`torchdoctor.lint.registry`
collects them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One lint rule as documented in docs/lint-rules.md.

    Example:
        >>> Rule("TD999", "example", "info", "what", "fix", "bad()", "good()").severity
        'info'
    """

    code: str
    name: str
    severity: str
    summary: str
    fix: str
    bad: str
    good: str
    replacement: str | None = None
    autofix: bool = False
    seed: str | None = None
    #: the pattern costs time when it runs (False: hygiene only, a deprecated entry point):
    #: the profile never ranks it as a suspect of the step's time
    runtime_cost: bool = True
    #: the pattern costs time only where batches or kernels go to a CUDA device (pinned
    #: memory, ``torch.cuda.empty_cache()``): a CPU run's advice leaves its findings out
    cuda_only: bool = False
    #: the pattern costs time in backward passes only (a slice's zero gradient): a run with no
    #: backward leaves its findings out (timm's inference.py: TD307 on a NumPy array's slices)
    backward_only: bool = False
    #: codes whose findings inside this rule's finding (its source span) are parts of its
    #: pattern and are dropped: the `.tolist()` of a label remap is TD302's, not a metric
    #: read (TD201, whose fix, "keep metrics as device tensors", would be the wrong one)
    explains: tuple[str, ...] = ()

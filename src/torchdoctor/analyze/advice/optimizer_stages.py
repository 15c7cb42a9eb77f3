"""A run that changes its optimizer's class partway trains in stages: DeepXDE's recipe for a
PINN, and most PINN papers', is thousands of Adam steps, then L-BFGS, whose every step runs
its closure (a forward and a backward) up to ``max_iter`` times. Steps record the class they
stepped where the run stepped several (``steps[i].optimizer``); the rarer class's steps are
few and long, but they are a stage of training, not periodic work (an evaluation, a
checkpoint): ``periodic-steps`` leaves them out, ``lbfgs-bookkeeping`` reads LBFGS's own.

Example:
    >>> steps = [{"index": i, "optimizer": "Adam"} for i in range(6)] + [
    ...     {"index": 6, "optimizer": "LBFGS"}]
    >>> main_optimizer({"steps": steps}), [s["index"] for s in stage_steps({"steps": steps})]
    ('Adam', [0, 1, 2, 3, 4, 5])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any


def main_optimizer(session: Mapping[str, Any]) -> str | None:
    """The class most steps stepped, where steps record it (the run stepped several); else None.

    Example:
        >>> main_optimizer({"steps": [{"index": 0}]}) is None
        True
    """
    counts = Counter(s["optimizer"] for s in session.get("steps") or () if s.get("optimizer"))
    return counts.most_common(1)[0][0] if counts else None


def stage_steps(session: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The steps of the main stage (:func:`main_optimizer`'s, and those that stepped none); all
    the steps where they do not record a class.

    Example:
        >>> steps = [{"optimizer": "Adam"}] * 3 + [{"optimizer": "LBFGS"}]
        >>> len(stage_steps({"steps": steps})), len(stage_steps({"steps": [{}, {}]}))
        (3, 2)
    """
    main = main_optimizer(session)
    return [s for s in session.get("steps") or ()
            if main is None or s.get("optimizer") in (None, main)]  # fmt: skip


def class_steps(session: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    """The steps that stepped an optimizer of class ``name``; [] where steps record none
    (one class in the run: :func:`torchdoctor.analyze.advice.lbfgs.lbfgs_bookkeeping` reads
    the whole run then).

    Example:
        >>> steps = [{"optimizer": "Adam"}] * 3 + [{"optimizer": "LBFGS"}]
        >>> len(class_steps({"steps": steps}, "LBFGS")), class_steps({"steps": [{}]}, "LBFGS")
        (1, [])
    """
    return [s for s in session.get("steps") or () if s.get("optimizer") == name]


def index_text(steps: list[Mapping[str, Any]]) -> str:
    """The steps' indices, as a range where they run on.

    Example:
        >>> index_text([{"index": 800}, {"index": 801}, {"index": 803}])
        'steps 800-803'
        >>> index_text([{"index": 7}])
        'step 7'
    """
    indices = sorted(int(s.get("index", 0)) for s in steps)
    if len(indices) == 1:
        return f"step {indices[0]}"
    return f"steps {indices[0]}-{indices[-1]}"

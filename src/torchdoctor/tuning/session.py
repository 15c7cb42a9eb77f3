"""The Session of a tune: the baseline's step time, the tune table (``session["tune"]``) and the
advice, whose knob entries carry the measured saving (``analyze/advice/knobs.py``).

``torchdoctor report`` merges such a session into the ``run`` session of the same script
(:func:`merge_tune`), so the run's knob advice becomes measured too.

Example:
    >>> tune = {"script": "/x/train.py", "rows": [], "baseline": {"steps_ms": [10.0, 12.0]}}
    >>> session = tune_session(tune)
    >>> session["config"]["command"], session["step_ms"]["median"]
    ('tune', 11.0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.session import Session, stat


def tune_session(tune: Mapping[str, Any]) -> Session:
    """A Session holding the tune result, with advice computed from it.

    Example:
        >>> session = tune_session({"script": "/x/train.py", "baseline": {"steps_ms": [4.0, 6.0]}})
        >>> session["label"], session["config"]["script"], session["step_ms"]["median"]
        ('train.py', '/x/train.py', 5.0)
    """
    from torchdoctor.analyze.advice import advice_dicts

    script = str(tune.get("script") or "")
    session = Session.new(label=os.path.basename(script) or "tune")
    data = session.to_dict()
    baseline = tune.get("baseline") or {}
    data["config"] = {"command": "tune", "script": script, "args": list(tune.get("args") or []),
                      "step_boundary": baseline.get("mode"),
                      "notes": list(tune.get("notes") or [])}  # fmt: skip
    data["step_ms"] = stat(baseline.get("steps_ms") or [])
    data["tune"] = dict(tune)
    data["interrupted"] = bool(tune.get("interrupted"))
    data["advice"] = advice_dicts(data)
    return Session.from_dict(data)


def same_script(run: Mapping[str, Any], tune: Mapping[str, Any]) -> bool:
    """Whether a tune session measured the script of a ``run`` session (by file name).

    Example:
        >>> same_script({"label": "train.py"}, {"config": {"script": "/a/train.py"}})
        True
    """
    script = str((tune.get("config") or {}).get("script") or "")
    label = str(run.get("label") or "")
    return bool(script) and os.path.basename(script) == os.path.basename(label)


def merge_tune(run: Mapping[str, Any], tune: Mapping[str, Any]) -> Session:
    """The ``run`` session with the tune's measurements, and advice recomputed from both.

    Example:
        >>> run = Session.new("train.py", with_environment=False)
        >>> tune = {"config": {"script": "/a/train.py"}, "tune": {"rows": []}}
        >>> "tune" in merge_tune(run, tune)
        True
    """
    from torchdoctor.analyze.advice import advice_dicts

    data = dict(run.to_dict() if hasattr(run, "to_dict") else run)
    data["tune"] = dict(tune.get("tune") or {})
    data["advice"] = advice_dicts(data)
    return Session.from_dict(data)

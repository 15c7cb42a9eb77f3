"""DataLoader lint findings read against the run's own loaders (``environment.data_loaders``).

TD401 (no workers) and TD403 (workers respawned each epoch) are contradicted when none of the
loaders the finding is about was so (the code may set ``num_workers`` from a variable the linter
cannot read), TD401 also when the model computes on every core this process may use (with the
other ranks on its host), or when loading measured under DATA_FLOOR of the step (workers would hide
at most that); a finding whose loaders fed at most RARE_LOADER of the steps (an evaluation's
loader) is no suspect of the step's time (TD402, no pinned memory, is left out of a CPU
run's advice altogether: ``Rule.cuda_only``).

Example:
    >>> contradicted({"code": "TD401"}, {"phases": {"data": 0.1}, "step_ms": 100.0})
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.base import center, same_file
from torchdoctor.analyze.advice.cores import cores_busy_computing
from torchdoctor.lint.registry import RULES

#: TD401 (no DataLoader workers) is dropped when the data phase measured under this share of
#: the step: loading in workers would hide at most the data phase (an in-memory dataset)
DATA_FLOOR = 0.02
#: DataLoader findings whose loaders (by the finding's complaint) fed at most this share of the
#: steps are cold: an evaluation's loader, iterated once per N steps, is not the step's cost
RARE_LOADER = 0.05
_LOADER_COMPLAINT = {
    "TD401": lambda d: not d.get("num_workers"),
    "TD402": lambda d: not d.get("pin_memory"),
    "TD403": lambda d: bool(d.get("num_workers")) and not d.get("persistent_workers"),
}


def contradicted(finding: Mapping[str, Any], session: Mapping[str, Any]) -> bool:
    """A finding the run shows does not apply: a DataLoader finding the run's own loaders
    contradict (the code may set ``num_workers`` from a variable the linter cannot read), or a
    backward's cost (``Rule.backward_only``) in a run with no backward.

    Example:
        >>> loaders = [{"num_workers": 4, "persistent_workers": True}]
        >>> contradicted({"code": "TD401"}, {"environment": {"data_loaders": loaders}})
        True
        >>> contradicted({"code": "TD307"}, {"phases": {"backward": {"median": 0.0}}})
        True
    """
    code = finding.get("code")
    rule = RULES.get(str(code))
    phases = session.get("phases") or {}
    if rule is not None and rule.backward_only and phases and not center(phases.get("backward")):
        return True
    if code == "TD401":  # loading measured as a sliver of the step: nothing for workers to hide
        data = (session.get("phases") or {}).get("data")
        step = center(session.get("step_ms"))
        if data and step > 0 and center(data) < DATA_FLOOR * step:
            return True
        # ... or a model computing on every core (the ranks of a CPU DDP run together):
        # workers would load on those same cores (two gloo ranks on 2 cores: 8.2 s -> 10.5 s
        # with 2 workers each); the data-loading rule says what is left to do
        if data and cores_busy_computing(session.get("environment") or {}):
            return True
    if code not in ("TD401", "TD403"):  # (TD402: pin_memory reads False on a CPU run)
        return False
    # no workers / workers respawned: none of the run's loaders it is about was so
    loaders = loaders_of(finding, (session.get("environment") or {}).get("data_loaders") or ())
    return bool(loaders) and not any(map(_LOADER_COMPLAINT[code], loaders))


def loaders_of(
    finding: Mapping[str, Any], loaders: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The run's loaders a DataLoader finding is about: those fetched from in the function
    that holds the finding's line (a loader's ``site``: its function's first line to the line
    that fetched), else all of them (a loader built in one function and iterated in another).

    Example:
        >>> train = {"num_workers": 4, "site": {"file": "/m/trainer.py", "function_line": 60,
        ...                                     "line": 79}}
        >>> evaluate = {"num_workers": 0, "site": {"file": "/m/adder.py", "function_line": 148,
        ...                                        "line": 153}}
        >>> loaders_of({"path": "trainer.py", "line": 68}, [train, evaluate]) == [train]
        True
        >>> len(loaders_of({"path": "data.py", "line": 5}, [train, evaluate]))
        2
    """
    line = finding.get("line")
    mine = [
        d for d in loaders
        if isinstance(line, int) and isinstance(d.get("site"), Mapping)
        and same_file(str(d["site"].get("file")), str(finding.get("path")))
        and int(d["site"].get("function_line") or 0) <= line <= int(d["site"].get("line") or 0)
    ]  # fmt: skip
    return mine or list(loaders)


def rare_loader(finding: Mapping[str, Any], session: Mapping[str, Any]) -> bool:
    """Every loader of the run the finding could be about fed few of its steps (minGPT's adder:
    its evaluation's ``DataLoader(..., num_workers=0)`` fed 1 step of 300, the training loader,
    with workers, all of them): the finding is no suspect of the step's time (TD402, no pinned
    memory, on a CPU run is left out before: ``Rule.cuda_only``).

    Example:
        >>> loaders = [{"num_workers": 0, "steps": 1}, {"num_workers": 4, "steps": 300}]
        >>> session = {"config": {"steps": 300}, "environment": {"data_loaders": loaders}}
        >>> rare_loader({"code": "TD401"}, session), rare_loader({"code": "TD201"}, session)
        (True, False)
    """
    code = str(finding.get("code"))
    complaint = _LOADER_COMPLAINT.get(code)
    loaders = loaders_of(finding, (session.get("environment") or {}).get("data_loaders") or ())
    steps = (session.get("config") or {}).get("steps")
    if complaint is None or not loaders or not isinstance(steps, int) or steps <= 0:
        return False
    suspects = [d for d in loaders if complaint(d)]
    return bool(suspects) and all(d.get("steps", 0) <= RARE_LOADER * steps for d in suspects)

"""The ``torchdoctor tune`` command the advice tells, with the run's own script and arguments.

Rules write ``torchdoctor tune SCRIPT`` (or ``torchdoctor tune --knobs KNOB SCRIPT``);
:func:`with_tune_command` puts the run's command line in place of ``SCRIPT`` when the session
has it (``config.script_command``, from ``torchdoctor run``), else its label when that is a
script: a script run with its options is tuned with them.

Example:
    >>> tune_target({"config": {"script_command": ["train.py", "--lr", "0.1"]}})
    'train.py --lr 0.1'
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import Advice

#: a script command longer than this is named by its script alone, and its arguments counted
MAX_COMMAND_CHARS = 160

_PLACEHOLDER = re.compile(r"(torchdoctor tune(?: --knobs [\w,]+)?) SCRIPT\b")


def tune_target(session: Mapping[str, Any]) -> str:
    """What follows ``torchdoctor tune [--knobs ...]``: the run's command line
    (``config.script_command``: the script as typed, its arguments), else the run's label
    when it is a script, else ``SCRIPT``.

    Example:
        >>> tune_target({"config": {"script_command": ["t.py", *["--x"] * 60]}})
        "t.py ARGS (this run's 60 arguments)"
        >>> tune_target({"config": {"script_command": ["-m", "pkg.train", "--lr", "1"]}})
        '-m pkg.train --lr 1'
        >>> tune_target({"label": "train.py"}), tune_target({"label": "fit"})
        ('train.py', 'SCRIPT')
    """
    command = (session.get("config") or {}).get("script_command")
    if isinstance(command, list) and command and all(isinstance(p, str) for p in command):
        joined = shlex.join(command)
        if len(joined) <= MAX_COMMAND_CHARS:
            return joined
        head = 2 if command[0] == "-m" else 1
        rest = len(command) - head
        return shlex.join(command[:head]) + f" ARGS (this run's {rest} arguments)"
    label = str(session.get("label") or "")
    return label if label.endswith(".py") else "SCRIPT"


def with_tune_command(session: Mapping[str, Any], found: list[Advice]) -> list[Advice]:
    """``found`` with every ``torchdoctor tune ... SCRIPT`` in a fix or evidence line naming
    the run's script and arguments (:func:`tune_target`).

    Example:
        >>> item = Advice("r", "t", fix="Measure it: torchdoctor tune --knobs compile SCRIPT.")
        >>> with_tune_command({"label": "train.py"}, [item])[0].fix
        'Measure it: torchdoctor tune --knobs compile train.py.'
    """
    target = tune_target(session)
    if target == "SCRIPT":
        return found
    def put(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: f"{m.group(1)} {target}", text) if "SCRIPT" in text else text
    for item in found:
        item.fix = put(item.fix or "")
        item.evidence = [put(line) for line in item.evidence]
    return found

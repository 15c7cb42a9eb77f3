"""A hot line whose torch calls a library makes: a framework's loop, or the library computing
the model itself.

``trainer.fit(...)`` spends its line's time on the framework's own work (logging, moving
batches, scaling the loss): the model's modules are in the tree, and what is left on the line
is overhead. A library that computes the model (gpytorch's ``model(x)`` and ``-mll(output, y)``:
its modules bypass ``nn.Module.__call__``, so no module hook sees them; linear_operator's
solves; Pyro's ELBO) leaves the model's whole cost on the line: its calls are differentiated
(a backward of a tenth of the line or more) or its heaviest call is an autograd Function or a
linear-algebra kernel. Telling that one "look for the option that controls how often it logs"
(clients round 21: gpytorch's exact GP, 99% of the step in InvQuadLogdet.apply) points at
nothing; it is told the work is the model's, and how to see inside it.

Example:
    >>> row = {"forward_ms": {"mean": 1.0}, "via": [{"ms": 0.9,
    ...        "file": "/env/lib/python3.11/site-packages/lightning/pytorch/loops/x.py"}]}
    >>> library_work(row), computes_model({**row, "total_ms": {"mean": 1.0}})
    ('lightning', False)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.base import center
from torchdoctor.session_read import installed_package

#: parts of an op's name that make it a linear-algebra kernel (a factorization, a solve)
LINALG = ("linalg", "cholesky", "solve", "eigh", "svd", "qr", "lu_", "inverse", "logdet",
          "triangular")  # fmt: skip
#: a line's backward share from which its library calls are part of the model's graph
DIFFERENTIATED = 0.1
#: the share of the line its heaviest call (an autograd Function, a solve) takes
HEAVIEST = 0.25


def library_work(row: Mapping[str, Any]) -> str | None:
    """The package whose code makes (nearly) all of a line's torch calls (the line calls into
    it: ``trainer.fit(...)``, ``loss = -mll(output, y)``), or None.

    Example:
        >>> library_work({"forward_ms": {"mean": 1.0}, "via": [{"ms": 0.2, "file": "/x/l.py"}]})
    """
    via = row.get("via") or ()
    forward = center(row.get("forward_ms"))
    if not via or forward <= 0 or sum(float(v.get("ms") or 0.0) for v in via) < 0.6 * forward:
        return None
    return installed_package(str(via[0].get("file") or ""))


def computes_model(row: Mapping[str, Any]) -> bool:
    """Whether a library line's work is the model's computation, not a framework's overhead:
    a tenth of its time or more is backward, or its heaviest call is an autograd Function's
    ``apply`` or a linear-algebra kernel taking a quarter of it or more.

    Example:
        >>> computes_model({"total_ms": {"mean": 500.0}, "backward_ms": {"mean": 60.0}})
        True
        >>> computes_model({"total_ms": {"mean": 20.0}, "backward_ms": {"mean": 0.0},
        ...                 "top_ops": [{"op": "Tensor.div", "forward_ms": 5.0}]})
        False
    """
    total = center(row.get("total_ms"))
    if total <= 0:
        return False
    if center(row.get("backward_ms")) >= DIFFERENTIATED * total:
        return True
    top = (row.get("top_ops") or [None])[0]
    if not top:
        return False
    name = str(top.get("op"))
    heavy = name.endswith(".apply") or any(part in name.lower() for part in LINALG)
    spent = float(top.get("forward_ms") or 0.0) + float(top.get("backward_ms") or 0.0)
    return heavy and spent >= HEAVIEST * total


def library_title(row: Mapping[str, Any], package: str) -> str:
    """The end of a library line's title.

    Example:
        >>> library_title({"total_ms": {"mean": 9.0}, "backward_ms": {"mean": 3.0}}, "gpytorch")
        "gpytorch's computation of the model, made inside it"
    """
    if computes_model(row):
        return f"{package}'s computation of the model, made inside it"
    return f"{package}'s own work per step, not code on this line"


def library_fix(row: Mapping[str, Any], package: str) -> str:
    """What to do about a library line: the framework's option, or a look inside the model.

    Example:
        >>> row = {"total_ms": {"mean": 9.0}, "backward_ms": {"mean": 3.0},
        ...        "via": [{"file": "/e/site-packages/gpytorch/models/exact_gp.py", "line": 9,
        ...                 "function": "__call__"}]}
        >>> "torchdoctor.region" in library_fix(row, "gpytorch")
        True
    """
    top = (row.get("via") or [{}])[0]
    where = f"{os.path.basename(str(top.get('file')))}:{top.get('line')} ({top.get('function')})"
    if computes_model(row):
        return (
            f"Nothing to rewrite on this line: its time is {package} computing the model (the "
            f"heaviest from {where}), in code no module hook sees, so the tree cannot split it. "
            "To see which part costs most, wrap the calls inside it in torchdoctor.region('...'). "
            f"Its cost follows the problem's size (the batch, the data, the model's "
            f"dimensions) and {package}'s numerical settings (solvers, tolerances, "
            "approximations); a change there can change the results, so compare them too."
        )
    return (
        f"Nothing to rewrite on this line: its torch calls are {package}'s, made per step "
        f"inside it (the heaviest from {where}). Look for the {package} option that controls "
        "that work (how often it logs, moves batches or scales the loss); if none does, it is "
        "the framework's overhead, small beside the model when steps are larger."
    )

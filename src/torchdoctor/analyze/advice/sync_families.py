"""What the host reads of a step are, read from their lines, and the fix each family needs.

One host-syncs advice covers every scalar read of the step, but the reads are of different
kinds, and each needs its own change (DETR's training step on a GPU: 44 ``v.item()`` a step in
its ``MetricLogger.update``, 24 ``assert (boxes[:, 2:] >= boxes[:, :2]).all()`` in
``generalized_box_iou``, 6 ``C.cpu()`` before scipy's Hungarian matching):

- ``metric``: a value read to be logged (a function named ``update``/``log...``, a line calling
  ``.update(``, ``log(``, a meter, a writer): keep it on the device, read at the log interval;
- ``assert``: a check on a tensor's value: check once, on a sample, with ``python -O``, or
  asynchronously on the device;
- ``host-op``: a copy to the host for CPU code that a ``torchdoctor.ops`` call runs on the device
  (the line's file, function or text names it: ``matcher.py``, ``linear_sum_assignment``);
- ``action``: an action handed to an environment (``envs.step(action.cpu().numpy())``): the
  host needs it; step more environments per policy call;
- ``loop``: any other read, one per item of a Python loop: batch the loop.

Example:
    >>> family({"op": "assert (b[:, 2:] >= b[:, :2]).all()", "kind": "bool"})
    'assert'
    >>> family({"op": "v = v.item()", "function": "update", "kind": "item"})
    'metric'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torchdoctor.analyze.advice.ops_table import ops_for

FAMILIES = ("loop", "metric", "assert", "host-op", "action")
_METRIC_FUNCTION = re.compile(
    r"^(update\w*|log\w*|add_scalars?|record\w*|track\w*|accumulate\w*|\w*meter\w*|\w*metric\w*)$",
    re.IGNORECASE,
)
_METRIC_TEXT = re.compile(
    r"\.update\(|\blog\w*\(|meter|metric|writer\.add|wandb|mlflow|print\(", re.IGNORECASE
)
_COPIES = frozenset({"cpu", "numpy", "tolist"})
#: what each family is called in a title, with its count
_NOUN = {"loop": "other", "metric": "metric reads", "assert": "asserts", "host-op": "host copies",
         "action": "actions for an environment"}
#: a value kept in a Python list (``losses.append(loss.item())``, ``fracs += [x.item()]``): a
#: metric when read about once a step, a loop's items when read many times
_KEPT_TEXT = re.compile(r"\.append\(|\+=\s*\[")


#: a read whose value is an action for an environment: passed to ``env.step(...)``, or
#: assigned to ``action(s)`` (cleanrl's ``actions = q_values.argmax(1).cpu().numpy()``)
_ACTION_TEXT = re.compile(r"\b\w*env\w*\.step\(|^(\w+_)?actions?\s*(,[^=]*)?=[^=]", re.IGNORECASE)


def is_action(record: Mapping[str, Any]) -> bool:
    """Whether a recorded read hands an action to an environment (the host needs the value:
    no metric buffer removes it; batching the loop's items does).

    Example:
        >>> is_action({"op": "actions = torch.argmax(q_values, dim=1).cpu().numpy()"})
        True
        >>> is_action({"op": "obs, r, done, *_ = envs.step(action.cpu().numpy())"})
        True
        >>> is_action({"op": "losses.append(loss.item())"})
        False
    """
    return bool(record.get("action")) or bool(
        _ACTION_TEXT.search(str(record.get("op") or "").strip()))  # (action: its source's)


def family(record: Mapping[str, Any]) -> str:
    """The family of one recorded read (see the module's docstring).

    Example:
        >>> family({"op": "C = C.view(bs, q, -1).cpu()", "kind": "cpu",
        ...         "file": "/detr/models/matcher.py", "function": "forward"})
        'host-op'
        >>> family({"op": "action = probs.multinomial(1).item()", "kind": "item",
        ...         "function": "select_action"})
        'action'
        >>> family({"op": "fracs += [(r > 1.2).float().mean().item()]", "per_step": 1.0})
        'metric'
        >>> family({"op": "tokens.append(t.item())", "per_step": 64.0})
        'loop'
    """
    op = str(record.get("op") or "").strip()
    if op.startswith("assert ") or op.startswith("assert("):
        return "assert"
    if is_action(record):
        return "action"
    function = str(record.get("function") or "")
    if _METRIC_FUNCTION.match(function) or _METRIC_TEXT.search(op):
        return "metric"
    if _KEPT_TEXT.search(op) and float(record.get("per_step") or 0.0) <= 2.0:
        return "metric"
    where = f"{os.path.basename(str(record.get('file') or ''))} {function} {op}"
    if record.get("kind") in _COPIES and ops_for(where):
        return "host-op"
    return "loop"


def by_family(
    records: list[Mapping[str, Any]], per_step: Any
) -> dict[str, list[Mapping[str, Any]]]:
    """The records by family, the family with the most reads a step first.

    Example:
        >>> recs = [{"op": "assert t.all()", "n": 2}, {"op": "x.item()", "n": 5}]
        >>> list(by_family(recs, lambda r: r["n"]))
        ['loop', 'assert']
    """
    found: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        found.setdefault(family(record), []).append(record)
    return dict(
        sorted(found.items(), key=lambda kv: -sum(per_step(r) for r in kv[1]))
    )


def _lines(records: list[Mapping[str, Any]], where: Any) -> str:
    shown = [where(r) for r in records[:3]]
    return ", ".join(shown) + (f" and {len(records) - 3} more" if len(records) > 3 else "")


def counts_text(families: Mapping[str, list[Mapping[str, Any]]], per_step: Any) -> str:
    """The families' reads a step, for a title.

    Example:
        >>> counts_text({"metric": [{"n": 44}], "assert": [{"n": 24}]}, lambda r: r["n"])
        '44 metric reads, 24 asserts'
    """
    return ", ".join(
        f"{sum(per_step(r) for r in records):.3g} {_NOUN[name]}" for name, records in families.items()
    )


def family_fixes(families: Mapping[str, list[Mapping[str, Any]]], where: Any) -> list[str]:
    """One sentence per family, naming its lines (``where(record)``: "file.py:12").

    Example:
        >>> fams = {"assert": [{"line": 51}], "metric": [{"line": 167}]}
        >>> [f.split(":")[0] for f in family_fixes(fams, lambda r: f"x.py:{r['line']}")]
        ['Asserts on tensor values (x.py', 'Metrics read every step (x.py']
    """
    fixes = []
    for name, records in families.items():
        lines = _lines(records, where)
        if name == "metric":
            fixes.append(
                f"Metrics read every step ({lines}): keep them as device tensors "
                "(torchdoctor.train.LazyMetrics, or a running sum of detached tensors) and read "
                "them once per log interval."
            )
        elif name == "action":
            fixes.append(
                f"Actions handed to an environment ({lines}): the host needs each one, so the "
                "read stays; what costs is a policy call and a read per environment step. Step "
                "more environments per call (gymnasium.vector: 4x the environments, a quarter "
                "of the steps per environment) so each read brings a batch of actions."
            )
        elif name == "assert":
            fixes.append(
                f"Asserts on tensor values ({lines}): each waits for the device to compute the "
                "condition. Check once where the data is made, or on a sample of steps; "
                "`python -O` strips asserts; torch._assert_async(cond) checks on the device "
                "without waiting."
            )
        elif name == "host-op":
            ops = ops_for(" ".join(
                f"{os.path.basename(str(r.get('file') or ''))} {r.get('function')} {r.get('op')}"
                for r in records
            ))  # fmt: skip
            fixes.append(
                f"Copies to the host for CPU code ({lines}): the step waits for the device "
                f"there, then computes on the CPU; {ops[0]} runs it batched on the device, "
                "without the copy."
            )
        else:
            fixes.append(
                f"Other reads ({lines}): each holds the host until the device has the value; "
                "keep the values on the device until the host needs them (a log interval), "
                "and in a loop over items, batch the loop (many items per call)."
            )
    return fixes


#: the code example of the family with the most reads
CODE = {
    "metric": 'metrics["loss"] = float(loss.item())   # before: one sync per step\n'
    "metrics.update(loss=loss.detach())      # after: LazyMetrics, synced at display",
    "assert": "assert (boxes[:, 2:] >= boxes[:, :2]).all()                # before: waits\n"
    "torch._assert_async((boxes[:, 2:] >= boxes[:, :2]).all())  # after: checked on the device",
    "host-op": "C = C.cpu()                                    # before: wait, copy, then scipy\n"
    "indices = [linear_sum_assignment(c) for c in C]\n"
    "result = torchdoctor.ops.linear_assignment(C)  # after: batched on the device (pad each\n"
    "# problem's rows to one count with a constant cost: it does not change the optimum)",
    "action": "envs = gymnasium.vector.SyncVectorEnv([make_env] * 4)  # 4 environments a call\n"
    "obs, *_ = envs.step(policy(obs).cpu().numpy())         # one read, 4 actions",
    "loop": "for obs in observations:                 # before: a read per item\n"
    "    action = policy(obs).argmax().item()\n"
    "actions = policy(torch.stack(observations)).argmax(-1).tolist()  # after: one",
}

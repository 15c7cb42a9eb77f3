"""Lint findings taken together (rule ``lint``, :mod:`torchdoctor.analyze.advice.lint_hot`):
cold findings grouped per code into one advice of heat 0, and findings measured as a sliver
of the step each that add up, per code and file, to NEGLIGIBLE_SHARE or more: one suspect.

Why the sum: a fix goes over every such line of a file at once, and its saving is theirs
together. cleanrl's TD3 updates three target networks in three loops over parameters
(``target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)``): 0.5% to
0.7% of the step each, each read as negligible, while the three took 1.0 ms of a 15 ms step
plain and ``torch._foreach_lerp_`` did them in 0.10 ms (BENCHMARKS.md, forty-fourth session).

Example:
    >>> loop = {"code": "TD305", "path": "/w/td3.py", "line": 29}
    >>> other = {**loop, "line": 31}
    >>> measured = {29: {"total_ms": 0.5, "own_ms": 0.13, "share": 0.006, "lines": [30]},
    ...             31: {"total_ms": 0.5, "own_ms": 0.12, "share": 0.005, "lines": [32]}}
    >>> groups, joined = summed_findings([loop, other], lambda f: measured[f["line"]])
    >>> group = groups[id(loop)]
    >>> round(group["measured"]["share"], 3), group["where"], id(other) in joined
    (0.011, 'td3.py:29, 31', True)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torchdoctor.analyze.advice.base import Advice, fmt_ms, location
from torchdoctor.analyze.advice.hot_lines_cures import CURES_BY_CODE

#: a finding on measured lines taking less than this share of the step is cold (a per-parameter
#: update loop at 0.2% of a Transformer's step ranked second, for a 0.004 ms saving), unless
#: its code's findings in the same file add up to it
NEGLIGIBLE_SHARE = 0.01
#: the evidence of a cold finding (merge.py rewords it when the finding joins measured advice)
COLD_NOTE = "not on a line the profile shows hot"
#: ... or on a line whose torch calls the hot lines measured as negligible
NEGLIGIBLE_NOTE = f"measured, under {NEGLIGIBLE_SHARE:.0%} of the step"
#: ... and the cold group's evidence for a recorded sync line with too few syncs to matter
FEW_SYNCS_NOTE = "the profile recorded its syncs, too few to matter in a step this long"


def summed_findings(
    findings: Sequence[Mapping[str, Any]],
    measured_of: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """``(groups, joined)``: of ``findings`` (each measured under NEGLIGIBLE_SHARE; ``measured_of``
    gives its measured lines added up: ``total_ms``, ``own_ms``, ``share``, ``lines``), those
    of one code and file, two or more, adding up to NEGLIGIBLE_SHARE of the step: ``groups``
    maps the first one's ``id`` to ``{"members", "measured", "where", "why"}`` (their lines
    added up), ``joined`` holds the others' ids (told by the first).

    Example:
        >>> a, b = {"code": "TD305", "path": "/w/t.py", "line": 3}, {"code": "TD305", "path": "/w/t.py", "line": 9}
        >>> slivers = {3: {"total_ms": 0.4, "share": 0.004}, 9: {"total_ms": 0.4, "share": 0.004}}
        >>> summed_findings([a, b], lambda f: slivers[f["line"]])  # (0.8% together: no group)
        ({}, set())
    """
    by_key: dict[tuple[str, str], list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    for finding in findings:
        measured = measured_of(finding)
        if measured is None or float(measured.get("total_ms") or 0.0) <= 0.0:
            continue
        key = (str(finding.get("code")), os.path.realpath(str(finding.get("path"))))
        by_key.setdefault(key, []).append((finding, measured))
    groups: dict[int, dict[str, Any]] = {}
    joined: set[int] = set()
    for members in by_key.values():
        share = sum(float(m["share"]) for _, m in members)
        if len(members) < 2 or share < NEGLIGIBLE_SHARE:
            continue
        members.sort(key=lambda fm: int(fm[0].get("line") or 0))
        lines = sorted({int(n) for _, m in members for n in m.get("lines") or ()})
        total = sum(float(m["total_ms"]) for _, m in members)
        own = sum(float(m.get("own_ms", m["total_ms"])) for _, m in members)
        first = members[0][0]
        base = os.path.basename(str(first.get("path") or "?"))
        groups[id(first)] = {
            "members": [f for f, _ in members],
            "measured": {
                "file": first.get("path"),
                "total_ms": total,
                "own_ms": own,
                "share": share,
                "lines": lines,
                "owners": sorted({str(o or "") for _, m in members for o in m.get("owners") or ()}),
            },  # fmt: skip
            "where": f"{base}:" + ", ".join(str(f.get("line")) for f, _ in members),
            "why": (
                f"its {len(members)} findings' lines ({', '.join(map(str, lines))}) take "
                f"{fmt_ms(own)} per step together, {100 * share:.0f}% of the step "
                "(measured)"
            ),  # fmt: skip
        }
        joined.update(id(f) for f, _ in members[1:])
    return groups, joined


def cold_advice(
    cold: Mapping[str, list[Mapping[str, Any]]], negligible: set[int], few_syncs: set[int],
    cause_of: Callable[[Mapping[str, Any]], str | None],
) -> list[Advice]:  # fmt: skip
    """One advice of heat 0 per code of ``cold`` findings, its evidence naming where each
    finding is and why it is cold (``negligible``, ``few_syncs``: ids; else not hot).

    Example:
        >>> f = {"code": "TD201", "message": ".item() in a loop", "path": "/w/t.py", "line": 3}
        >>> advice = cold_advice({"TD201": [f]}, set(), set(), lambda f: None)
        >>> advice[0].title, advice[0].evidence
        ('TD201: .item() in a loop (1 finding(s), not hot)', ['t.py:3: not on a line the profile shows hot'])
    """
    advice = []
    for code, group in sorted(cold.items()):
        evidence = []
        for note, part in (
            (COLD_NOTE, [f for f in group if id(f) not in negligible | few_syncs]),
            (NEGLIGIBLE_NOTE, [f for f in group if id(f) in negligible]),
            (FEW_SYNCS_NOTE, [f for f in group if id(f) in few_syncs]),
        ):  # fmt: skip
            places = list(dict.fromkeys(  # (two findings on one line: named once)
                f"{os.path.basename(str(f.get('path') or '?'))}:{f.get('line', '?')}" for f in part
            ))  # fmt: skip
            more = f" and {len(places) - 5} more" if len(places) > 5 else ""
            places = ", ".join(places[:5])
            if part:
                evidence.append(f"{places}{more}: {note}")
        advice.append(
            Advice(
                rule="lint",
                title=f"{code}: {group[0].get('message')} ({len(group)} finding(s), not hot)",
                confidence="low",
                evidence=evidence,
                fix=CURES_BY_CODE[code].fix
                if code in CURES_BY_CODE
                else str(group[0].get("replacement") or "see `torchdoctor lint` for each line"),
                references=[code],
                heat=0.0,
                locations=[location(f.get("path"), f.get("line")) for f in group],
                cause=cause_of(group[0]),
            )
        )
    return advice

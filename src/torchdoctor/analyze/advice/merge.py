"""One advice per cause: entries about the same source line or the same remedy become one.

Rules look at one kind of evidence each (the tree, the sync audit, hot lines, lint findings), so
two of them can find the same thing: a ``.item()`` line is a sync record *and* a TD201 finding;
``torch.compile`` is the remedy of a dominant layer stack *and* an engine knob. Entries that
share a location (``Advice.locations``, compared as the same file and line) or a ``cause`` are
merged, transitively: the strongest entry (first in ranked order) keeps its title, fix and code;
the merged entry gathers the evidence, references and locations of all of them and keeps the
largest saving and heat (the same cause is not saved twice).

Example:
    >>> from torchdoctor.analyze.advice.base import Advice
    >>> a = Advice("host-syncs", "Keep scalars on the device", locations=["t.py:3"], heat=0.5)
    >>> b = Advice("lint", "TD201 .item() in a loop", locations=["/p/t.py:3"], evidence=["x"])
    >>> [(m.title, m.evidence) for m in one_per_cause([a, b])]
    [('Keep scalars on the device', ['x', 'also found by: lint'])]
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

from torchdoctor.analyze.advice.base import CONFIDENCES, Advice, same_file, split_location


def _keys(advice: Advice) -> list[tuple]:
    """What an entry is about: its source lines (by file name and line) and its cause."""
    keys: list[tuple] = []
    for text in advice.locations:
        file, line = split_location(text)
        if line is not None:
            keys.append(("line", os.path.basename(file), line, file))
    if advice.cause:
        keys.append(("cause", advice.cause))
    return keys


def _same(a: tuple, b: tuple) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "cause":
        return a == b
    return a[1:3] == b[1:3] and same_file(a[3], b[3])


def _groups(advice: Sequence[Advice]) -> list[list[int]]:
    """Indices of entries that share a key, transitively (union-find), in input order."""
    parent = list(range(len(advice)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: list[tuple[tuple, int]] = []
    for index, item in enumerate(advice):
        for key in _keys(item):
            for other_key, other in seen:
                if _same(key, other_key):
                    a, b = root(index), root(other)
                    parent[max(a, b)] = min(a, b)
            seen.append((key, index))
    groups: dict[int, list[int]] = {}
    for index in range(len(advice)):
        groups.setdefault(root(index), []).append(index)
    return sorted(groups.values())


def _merged(entries: list[Advice]) -> Advice:
    if len(entries) == 1:
        return entries[0]
    first = copy.deepcopy(entries[0])  # the rules' own entries stay as they were
    for other in entries[1:]:
        first.evidence.extend(e for e in other.evidence if e not in first.evidence)
        first.references.extend(r for r in other.references if r not in first.references)
        first.locations.extend(loc for loc in other.locations if loc not in first.locations)
        if (other.estimated_saving_ms or 0.0) > (first.estimated_saving_ms or 0.0):
            first.estimated_saving_ms = other.estimated_saving_ms
            first.saving_range_ms = other.saving_range_ms
        first.heat = max(first.heat, other.heat)
        if CONFIDENCES.index(other.confidence) < CONFIDENCES.index(first.confidence):
            first.confidence = other.confidence
        first.generic = first.generic and other.generic
    also = sorted({e.rule for e in entries[1:]} - {first.rule})
    if also:
        first.evidence.append("also found by: " + ", ".join(also))
    return first


def one_per_cause(advice: Sequence[Advice]) -> list[Advice]:
    """Merge entries about the same line or cause; order is kept (strongest first per group).

    ``advice`` should be ranked already: the first entry of a group is the one kept.

    Example:
        >>> from torchdoctor.analyze.advice.base import Advice
        >>> items = [Advice("dominant-module", "compile the stack", cause="torch.compile"),
        ...          Advice("engine-knobs", "torch.compile the model", cause="torch.compile"),
        ...          Advice("lint", "TD302", locations=["a.py:4"])]
        >>> [a.title for a in one_per_cause(items)]
        ['compile the stack', 'TD302']
    """
    for item in advice:
        if item.confidence not in CONFIDENCES:
            raise ValueError(
                f"advice {item.title!r} has confidence {item.confidence!r}; expected one of "
                f"{CONFIDENCES}"
            )
    return [_merged([advice[i] for i in group]) for group in _groups(advice)]
